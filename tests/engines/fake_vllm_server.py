"""A stand-in for ``python -m vllm.entrypoints.openai.api_server``: the same command line and the
routes the vLLM engine uses, with fixed, known answers, so the engine's command-line and HTTP glue
is tested without vLLM. Every request body is appended to ``$FAKE_VLLM_REQUESTS`` (JSON lines).

Run as a fake interpreter: ``fake-python -m vllm.entrypoints.openai.api_server --port N ...``;
``fake-python -c CODE`` (the engine's "can it import vllm" probe) exits 0.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EOS = 2
GENERATED = [7, 8, 9, EOS, 11]  # what every prompt "generates": EOS after three tokens


def token_logprob(t: int) -> float:
    return -0.5 - t / 100


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test log quiet
        pass

    def _send(self, code: int, body: dict | str, content_type: str = "application/json") -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/version":
            self._send(200, {"version": "0.0-fake"})
        else:
            self._send(404, {"error": {"message": "no route"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(os.environ["FAKE_VLLM_REQUESTS"], "a") as f:
            f.write(json.dumps(body) + "\n")
        if body["prompt"] == [[666]]:
            self._send(400, {"error": {"message": "This model's maximum context length is 4 tokens"}})
            return
        choices = []
        for i, prompt in enumerate(body["prompt"]):
            ids = GENERATED if not body.get("ignore_eos") else [7, 8, 9, 10, 11, 12, 13, 14]
            ids = ids[: body["max_tokens"]]
            choice = {"index": i, "text": "", "finish_reason": "length", "token_ids": ids,
                      "prompt_token_ids": prompt, "prompt_logprobs": None, "logprobs": None}
            if body.get("prompt_logprobs") is not None:
                choice["prompt_logprobs"] = [None] + [{str(t): {"logprob": token_logprob(t), "rank": 1}}
                                                      for t in prompt[1:]]
            choices.append(choice)
        if body.get("stream"):
            events = "".join(f"data: {json.dumps({'choices': [{'index': 0, 'token_ids': [t]}]})}\n\n"
                             for t in choices[0]["token_ids"])
            self._send(200, events + "data: [DONE]\n\n", "text/event-stream")
            return
        self._send(200, {"choices": list(reversed(choices))})  # out of order: the engine sorts by index


def main(argv: list[str]) -> None:
    if argv[:1] == ["-c"]:
        return  # the find_spec probe: "vllm is importable"
    args = argv[2:]  # drop "-m vllm.entrypoints.openai.api_server"
    with open(os.environ["FAKE_VLLM_REQUESTS"] + ".argv", "w") as f:
        json.dump({"argv": args, "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "VLLM_CPU_KVCACHE_SPACE",
                                                                         "VLLM_CPU_OMP_THREADS_BIND")}}, f)
    if os.environ.get("FAKE_VLLM_CRASH"):
        print("RuntimeError: Unsupported CPU attention configuration: head_dim=16", flush=True)
        sys.exit(3)
    port = int(args[args.index("--port") + 1])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
