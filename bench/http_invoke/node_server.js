// Node.js baseline for bench/http_invoke/run.sh: one process, the same constant reply as
// examples/hello. Reads the whole request body first, as a real handler would.
// Usage: node node_server.js PORT
'use strict';
const http = require('http');

const port = Number(process.argv[2] || 0);
const reply = Buffer.from('Hello from wisp\n');

const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': reply.length});
    res.end(reply);
  });
});
server.keepAliveTimeout = 75_000;
server.listen(port, '127.0.0.1', () => {
  console.log(`node baseline listening on http://127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
