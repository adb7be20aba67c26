def handle(event, context):
    body = event.json() if event.content_type.startswith("application/json") else None
    name = (body or {}).get("name", "world")
    n = context.state.incr("greetings")
    context.emit("py-hello/greeted", {"name": name, "n": n}, qos=1)
    context.log(f"greeted {name}")
    return {"statusCode": 200, "body": {"message": f"Hello, {name}!", "n": n}}
