// bench/prewarm: replays the Azure Functions trace sample through the keep-alive policies
// (src/scheduling) and reports per-application cold-start percentages and wasted memory time.
// run.sh drives it and draws the plot; docs/prewarm.md describes the method.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "scheduling/azure_trace.h"
#include "scheduling/trace_sim.h"
#include "wisp/keepalive_policy.h"

namespace {

using wisp::KeepAlivePolicyOptions;

struct PolicySpec {
  std::string label;   // e.g. "fixed-10", "hybrid-240"
  std::string family;  // registered name
  KeepAlivePolicyOptions options;
};

struct Job {
  const PolicySpec* spec;
  int64_t cap_mb;
  wisp::SimResult result;
  std::string error;
};

struct Summary {
  double p25 = 0, p50 = 0, p75 = 0, p90 = 0, p99 = 0, zero_share = 0;
  double p75_after_first = 0;  // without each app's unavoidable first cold start
  double p75_miss = 0;         // cold or dropped, over all invocations
};

Summary Summarise(const wisp::SimResult& result) {
  std::vector<double> cold, after_first, miss;
  for (const auto& app : result.apps) {
    if (app.invocations == 0) continue;
    cold.push_back(app.ColdStartPercent());
    miss.push_back(app.MissPercent());
    if (app.invocations > 1) after_first.push_back(app.ColdStartPercentAfterFirst());
  }
  Summary s;
  s.p75_after_first = wisp::Percentile(after_first, 75);
  s.p75_miss = wisp::Percentile(miss, 75);
  s.p25 = wisp::Percentile(cold, 25);
  s.p50 = wisp::Percentile(cold, 50);
  s.p75 = wisp::Percentile(cold, 75);
  s.p90 = wisp::Percentile(cold, 90);
  s.p99 = wisp::Percentile(cold, 99);
  s.zero_share = cold.empty() ? 0
                              : 100.0 * std::count(cold.begin(), cold.end(), 0.0) /
                                    static_cast<double>(cold.size());
  return s;
}

// Runs every job on `threads` threads; each job gets its own policy.
void RunJobs(const std::vector<wisp::SimApp>& apps, std::vector<Job>& jobs, int threads,
             wisp::PolicyTimeMs horizon_ms) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      Job& job = jobs[i];
      auto policy = wisp::CreateKeepAlivePolicy(job.spec->family, job.spec->options);
      if (!policy.ok()) {
        job.error = policy.status().ToString();
        continue;
      }
      auto result = wisp::SimulatePolicy(apps, **policy, {job.cap_mb, horizon_ms});
      if (!result.ok()) {
        job.error = result.status().ToString();
        continue;
      }
      job.result = std::move(result).value();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(threads, 1); ++t) pool.emplace_back(worker);
  for (auto& thread : pool) thread.join();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Replays the Azure Functions trace sample through wisp's keep-alive policies"};
  std::string data_dir;
  std::string out_dir = ".";
  std::vector<int> sizes{100, 500, 1000};
  uint64_t seed = 1;
  int threads = 2;
  cli.add_option("--data", data_dir, "directory with N_{inv,run,mem}.csv")->required();
  cli.add_option("--out", out_dir, "where to write the CSV files");
  cli.add_option("--sizes", sizes, "samples to replay (the last one gets the sweep)")
      ->delimiter(',');
  cli.add_option("--seed", seed, "seed for spreading invocations within a minute");
  cli.add_option("--threads", threads, "simulations run in parallel");
  std::vector<std::string> extra;
  cli.add_option("--policy", extra,
                 "replace the sweep with LABEL=FAMILY[:key=value,...] (repeatable), e.g. "
                 "wisp-a=wisp:tail_percentile=99");
  bool no_caps = false;
  cli.add_flag("--no-caps", no_caps, "skip the memory-cap runs");
  CLI11_PARSE(cli, argc, argv);

  wisp::RegisterBuiltinKeepAlivePolicies();
  const PolicySpec fixed10{"fixed-10", "fixed", {{"keep_alive_minutes", 10}}};
  const PolicySpec hybrid{"hybrid", "hybrid", {}};
  const PolicySpec wisp_policy{"wisp", "wisp", {}};
  std::vector<PolicySpec> sweep;
  for (int minutes : {5, 10, 15, 20, 30, 45, 60, 90, 120}) {
    sweep.push_back({fmt::format("fixed-{}", minutes), "fixed", {{"keep_alive_minutes", minutes}}});
  }
  for (int range : {60, 120, 180, 240, 360}) {
    sweep.push_back({fmt::format("hybrid-{}", range), "hybrid", {{"range_minutes", range}}});
  }
  for (double tail : {90.0, 95.0}) {
    sweep.push_back(
        {fmt::format("hybrid-240-tail{}", tail), "hybrid", {{"tail_percentile", tail}}});
  }
  sweep.push_back({"wisp-no-period", "wisp", {{"period_samples", 1000}}});
  sweep.push_back({"wisp-no-memscale", "wisp", {{"memory_reference_mb", 0}}});
  sweep.push_back({"wisp-unknown480", "wisp", {{"unknown_keep_alive_minutes", 480}}});
  sweep.push_back({"wisp-unknown720-r480",
                   "wisp",
                   {{"unknown_keep_alive_minutes", 720}, {"range_minutes", 480}}});

  if (!extra.empty()) {
    sweep.clear();
    for (const std::string& text : extra) {
      const size_t eq = text.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "prewarm: --policy %s: expected LABEL=FAMILY[:k=v,...]\n",
                     text.c_str());
        return 2;
      }
      PolicySpec spec{text.substr(0, eq), text.substr(eq + 1), {}};
      if (const size_t colon = spec.family.find(':'); colon != std::string::npos) {
        std::string rest = spec.family.substr(colon + 1);
        spec.family.resize(colon);
        size_t start = 0;
        while (start < rest.size()) {
          size_t end = rest.find(',', start);
          if (end == std::string::npos) end = rest.size();
          const std::string pair = rest.substr(start, end - start);
          const size_t sep = pair.find('=');
          char* tail = nullptr;
          const double value =
              sep == std::string::npos ? 0 : std::strtod(pair.c_str() + sep + 1, &tail);
          if (sep == std::string::npos || tail == pair.c_str() + sep + 1 || *tail != '\0') {
            std::fprintf(stderr, "prewarm: --policy %s: bad option '%s'\n", text.c_str(),
                         pair.c_str());
            return 2;
          }
          spec.options[pair.substr(0, sep)] = value;
          start = end + 1;
        }
      }
      sweep.push_back(std::move(spec));
    }
  }

  nlohmann::json result_json;
  std::ofstream sweep_csv(out_dir + "/prewarm_sweep.csv");
  std::ofstream caps_csv(out_dir + "/prewarm_caps.csv");
  std::ofstream apps_csv(out_dir + "/prewarm_app_cold.csv");
  if (!sweep_csv || !caps_csv || !apps_csv) {
    std::fprintf(stderr, "prewarm: cannot write CSV files in %s\n", out_dir.c_str());
    return 1;
  }
  sweep_csv << "sample,policy,family,cold_p50,cold_p75,cold_p90,cold_p75_after_first,wasted_mb_min,"
               "wasted_norm_pct,cold_starts,invocations\n";
  caps_csv << "sample,policy,cap_mb,cold_p75,cold_total_pct,dropped,dropped_pct,evictions,"
              "wasted_norm_pct,miss_p75\n";
  apps_csv << "sample,policy,app,invocations,cold_starts,cold_pct,memory_mb\n";

  for (size_t s = 0; s < sizes.size(); ++s) {
    const int n = sizes[s];
    const bool last = s + 1 == sizes.size();
    auto trace = wisp::LoadAzureTrace(data_dir, n);
    if (!trace.ok()) {
      std::fprintf(stderr, "prewarm: %s\n", trace.status().ToString().c_str());
      return 1;
    }
    const std::vector<wisp::SimApp> apps = wisp::ExpandAzureTrace(*trace, seed);
    int64_t invocations = 0, periods = 0;
    for (const auto& app : apps) {
      periods += static_cast<int64_t>(app.invocations.size());
      for (const auto& inv : app.invocations) invocations += inv.count;
    }
    const wisp::PolicyTimeMs horizon = trace->minutes * wisp::kMsPerMinute;
    std::printf("\n== %d-function sample: %zu apps, %lld invocations (%lld busy periods), %d min\n",
                n, apps.size(), static_cast<long long>(invocations),
                static_cast<long long>(periods), trace->minutes);

    std::vector<Job> jobs;
    jobs.push_back({&fixed10, 0, {}, {}});
    jobs.push_back({&hybrid, 0, {}, {}});
    jobs.push_back({&wisp_policy, 0, {}, {}});
    const size_t main_jobs = jobs.size();
    if (last) {
      for (const PolicySpec& spec : sweep) {
        if (spec.label != "fixed-10") jobs.push_back({&spec, 0, {}, {}});
      }
    }
    for (int64_t cap : {1024, 4096, 16384}) {
      if (no_caps) break;
      for (const PolicySpec* spec : {&fixed10, &hybrid, &wisp_policy}) {
        jobs.push_back({spec, cap, {}, {}});
      }
    }
    RunJobs(apps, jobs, threads, horizon);
    for (const Job& job : jobs) {
      if (!job.error.empty()) {
        std::fprintf(stderr, "prewarm: %s: %s\n", job.spec->label.c_str(), job.error.c_str());
        return 1;
      }
    }
    const double baseline = jobs[0].result.wasted_mb_minutes;
    auto norm = [&](const wisp::SimResult& r) {
      return baseline > 0 ? 100.0 * r.wasted_mb_minutes / baseline : 0.0;
    };

    std::printf("%-22s %7s %7s %7s %7s %9s %8s %10s %9s\n", "policy", "cold%50", "cold%75",
                "cold%90", "cold%99", "c%75-1st", "wasted%", "cold", "prewarms");
    for (const Job& job : jobs) {
      if (job.cap_mb != 0) continue;
      const Summary sum = Summarise(job.result);
      std::printf("%-22s %7.2f %7.2f %7.2f %7.2f %9.2f %8.1f %10lld %9lld\n",
                  job.spec->label.c_str(), sum.p50, sum.p75, sum.p90, sum.p99, sum.p75_after_first,
                  norm(job.result), static_cast<long long>(job.result.cold_starts),
                  static_cast<long long>(job.result.prewarms));
      sweep_csv << fmt::format("{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{:.1f},{:.2f},{},{}\n", n,
                               job.spec->label, job.spec->family, sum.p50, sum.p75, sum.p90,
                               sum.p75_after_first, job.result.wasted_mb_minutes, norm(job.result),
                               job.result.cold_starts, job.result.invocations);
    }
    for (size_t j = 0; j < main_jobs; ++j) {
      const auto& r = jobs[j].result;
      for (size_t a = 0; a < r.apps.size(); ++a) {
        apps_csv << fmt::format("{},{},{},{},{},{:.4f},{}\n", n, jobs[j].spec->label, a,
                                r.apps[a].invocations, r.apps[a].cold_starts,
                                r.apps[a].ColdStartPercent(), apps[a].memory_mb);
      }
    }
    if (!no_caps) {
      std::printf(
          "\nnode memory cap (cold%% p75 over apps, cold starts and drops over all "
          "invocations, wasted memory normalised to uncapped fixed-10):\n");
      std::printf("%-10s %8s %8s %8s %10s %8s %10s %8s\n", "policy", "cap_mb", "cold%75",
                  "cold%all", "dropped", "drop%", "evictions", "miss%75");
      for (const Job& job : jobs) {
        if (job.cap_mb == 0) continue;
        const auto& r = job.result;
        const Summary sum = Summarise(r);
        const double served = static_cast<double>(r.invocations - r.dropped);
        const double cold_all = served > 0 ? 100.0 * r.cold_starts / served : 0;
        const double drop_pct = 100.0 * r.dropped / std::max<double>(r.invocations, 1);
        std::printf("%-10s %8lld %8.2f %8.3f %10lld %8.3f %10lld %8.1f\n", job.spec->label.c_str(),
                    static_cast<long long>(job.cap_mb), sum.p75, cold_all,
                    static_cast<long long>(r.dropped), drop_pct,
                    static_cast<long long>(r.evictions), sum.p75_miss);
        caps_csv << fmt::format("{},{},{},{:.4f},{:.4f},{},{:.4f},{},{:.2f},{:.4f}\n", n,
                                job.spec->label, job.cap_mb, sum.p75, cold_all, r.dropped, drop_pct,
                                r.evictions, norm(r), sum.p75_miss);
        if (!last) continue;
        result_json["caps"][fmt::format("{}_{}mb", job.spec->label, job.cap_mb)] = {
            {"cold_p75_pct", sum.p75},
            {"miss_p75_pct", sum.p75_miss},
            {"dropped", r.dropped},
            {"dropped_pct", drop_pct}};
      }
    }
    if (last) {
      for (size_t j = 0; j < main_jobs; ++j) {
        const Summary sum = Summarise(jobs[j].result);
        result_json[jobs[j].spec->label] = {{"cold_p75_pct", sum.p75},
                                            {"cold_p75_after_first_pct", sum.p75_after_first},
                                            {"wasted_norm_pct", norm(jobs[j].result)}};
      }
      const double hybrid_p75 = result_json["hybrid"]["cold_p75_pct"];
      const double wisp_p75 = result_json["wisp"]["cold_p75_pct"];
      const double hybrid_waste = result_json["hybrid"]["wasted_norm_pct"];
      const double wisp_waste = result_json["wisp"]["wasted_norm_pct"];
      const bool goal = wisp_p75 <= 0.5 * hybrid_p75 && wisp_waste <= hybrid_waste;
      // No online policy avoids an app's first cold start: with only that one cold, each app
      // has 100 / invocations %, and the 75th percentile of those bounds every policy's.
      std::vector<double> floor;
      for (const auto& app : jobs[0].result.apps) {
        if (app.invocations > 0) floor.push_back(100.0 / static_cast<double>(app.invocations));
      }
      const double floor_p75 = wisp::Percentile(floor, 75);
      std::printf(
          "\nlower bound for any policy (only each app's first invocation cold): "
          "cold%%75 %.2f%%; 0.5 x hybrid's = %.2f%%\n",
          floor_p75, 0.5 * hybrid_p75);
      result_json["floor_cold_p75_pct"] = floor_p75;
      std::printf(
          "\ngoal (wisp cold%%75 <= 0.5 x hybrid's, wasted memory <= hybrid's): %s "
          "(wisp %.2f%% vs hybrid %.2f%%, wasted %.1f%% vs %.1f%%)\n",
          goal ? "met" : "MISSED", wisp_p75, hybrid_p75, wisp_waste, hybrid_waste);
      result_json["sample"] = n;
      result_json["seed"] = seed;
      result_json["goal_met"] = goal;
    }
  }
  std::printf("RESULT %s\n", result_json.dump().c_str());
  return 0;
}
