# The Python function of bench/cold_start: a constant reply, like examples/hello in Lua, so that
# the figures measure starting and calling the program, not the handler's work.
def handle(event, context):
    return "Hello from wisp\n"
