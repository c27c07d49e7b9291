from snakepit_bridge import BaseAdapter, telemetry, tool


class Greeter(BaseAdapter):
    def __init__(self):
        self.greeting = "Hello"

    @tool(description="Greet someone")
    def greet(self, name: str) -> dict:
        with telemetry.span("compose", {"name_length": str(len(name))}):
            text = f"{self.greeting}, {name}!"
        return {"text": text}
