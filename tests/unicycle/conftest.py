"""A tiny OpenAI-compatible chat server on 127.0.0.1 for the judge and builder tests."""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def fake_reply(content: str) -> str:
    """A deterministic stand-in for a hosted model: judges by exact match, writes builder JSON."""
    if content.startswith("Text-to-image prompt:"):
        num_no = int(re.search(r"1\. (\d+) different", content).group(1))
        num_mc = int(re.search(r"2\. (\d+) multiple-choice", content).group(1))
        subject = content.splitlines()[0].split(": ", 1)[1]
        return "Here you go:\n" + json.dumps({
            "no": [f"Is there a unicorn number {j} in the image?" for j in range(num_no)],
            "mc": [{"question": f"Which word is in the prompt '{subject}'? ({j})",
                    "options": ["zebra", subject.split()[0], "quartz", "vortex"], "answer": subject.split()[0]}
                   for j in range(num_mc)] + [{"question": "bad", "options": ["a"], "answer": "b"}]})
    reference = re.search(r"^Reference answer: (.*)$", content, re.M).group(1)
    given = re.search(r"^Answer given: (.*)$", content, re.M).group(1)
    if given.strip() == "mumble":
        return "I am not sure what to say."
    return "Verdict: correct" if given.strip().lower() == reference.strip().lower() else "Thinking... Verdict: wrong"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        content = body["messages"][0]["content"]
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": fake_reply(content)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
