"""Text models that judges and the TIIF item builder talk to: ``complete(prompts) -> replies``, greedy.

    EngineClient   any checkpoint the engine loads (Engine.generate, batched; prompts in the model's template)
    OpenAIClient   an OpenAI-compatible chat endpoint (``POST {url}/chat/completions``), standard library only
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


class EngineClient:
    """Greedy text completion through a unicorn Engine; ``name`` is recorded in reports."""

    def __init__(self, engine, max_tokens: int = 64, name: str = "engine"):
        self.engine, self.max_tokens, self.name = engine, max_tokens, name

    def complete(self, prompts: list[str]) -> list[str]:
        from unicorn.engine.params import SamplingParams

        if not prompts:
            return []
        outputs = self.engine.generate(list(prompts), SamplingParams(temperature=0.0, max_tokens=self.max_tokens))
        return [o.text if o.error is None and o.text is not None else "" for o in outputs]


def chat_url(url: str) -> str:
    """The chat-completions address for a base URL (``http://host/v1``) or the full one."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class OpenAIClient:
    """An OpenAI-compatible chat endpoint: one user message per prompt, temperature 0, ``workers`` requests at a
    time. The key comes from ``api_key`` or the ``OPENAI_API_KEY`` environment variable (none for local servers).
    Transport errors and 5xx replies are retried ``retries`` times, then raised (never scored as a verdict)."""

    def __init__(self, url: str, model: str = "gpt-4o", api_key: str | None = None, max_tokens: int = 256,
                 timeout: float = 120.0, retries: int = 3, workers: int = 8):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the judge URL must start with http:// or https://, got {url!r}")
        self.url, self.model, self.max_tokens = chat_url(url), model, max_tokens
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.retries, self.workers = timeout, retries, workers
        self.name = f"openai:{self.url}:{model}"

    def _post(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as err:
                if err.code < 500 or attempt == self.retries:
                    raise ValueError(f"{self.url}: HTTP {err.code} {err.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.retries:
                    raise ValueError(f"{self.url}: cannot reach the endpoint ({err})") from None
            time.sleep(0.5 * 2 ** attempt)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{self.url}: the reply has no choices[0].message.content") from None
        return content if isinstance(content, str) else ""

    def complete(self, prompts: list[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return list(pool.map(self._post, prompts))
