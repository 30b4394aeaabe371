"""Random and extreme requests over HTTP: every one is answered or refused with an
OpenAI-shaped error, never a 5xx, and the server stays healthy.

Found this way: a top_k of 2^40 sized a sampling buffer by it, and the allocation
failure aborted the server."""
import base64
import json
import random
import threading
import urllib.error
import urllib.request

from conftest import FIXTURES

MODEL = "medgemma-tiny"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer test-key"}
IMAGES = ["square.png", "photo.jpg", "gray16.png", "anim.gif", "alpha.png", "tall.webp", "scan.tiff", "small.bmp"]
MIME = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp", "tiff": "image/tiff",
        "bmp": "image/bmp"}
# Values of the wrong type or out of range, for any field.
ODD = [None, True, 0, -1, 2**31, 2**63, -2**63, 1e308, -0.0, "", "x", [], [None], {}, {"a": 1}, "\u0000",
       "a" * 5000]


def data_url(name):
    raw = (FIXTURES / "images" / name).read_bytes()
    return f"data:{MIME[name.rsplit('.', 1)[1]]};base64,{base64.b64encode(raw).decode()}"


def post(base, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers=HEADERS)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def problem(status, body, request):
    """What is wrong with a response, or None."""
    if status >= 500:
        return f"{status}: {body[:200]!r}"
    if status >= 400:
        try:
            err = json.loads(body)["error"]
            return None if isinstance(err["message"], str) and err["message"] else "empty error message"
        except (ValueError, KeyError, TypeError):
            return f"{status} without an OpenAI error body: {body[:200]!r}"
    if isinstance(request, dict) and request.get("stream") is True:
        lines = body.decode().splitlines()
        if "data: [DONE]" not in lines:
            return "stream without [DONE]"
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        return next((f"error event {e['error']}" for e in events if "error" in e), None)
    choices = json.loads(body).get("choices")
    return None if isinstance(choices, list) and choices else "200 without choices"


def text(rng):
    return rng.choice(["Hi", "", " ", "What is a fracture?", "é" * rng.randint(1, 40), "<start_of_turn>",
                       "<start_of_image>", "\n\n", '{"a":', "x " * rng.randint(1, 300), "🩺"])


def content(rng):
    if rng.random() < 0.4:
        return text(rng)
    return [rng.choice([{"type": "text", "text": text(rng)},
                        {"type": "image_url", "image_url": {"url": data_url(rng.choice(IMAGES))}}])
            for _ in range(rng.randint(1, 3))]


OPTIONS = {
    "max_tokens": [1, 5, 16, 10**6],
    "temperature": [0, 1e-9, 0.7, 2],
    "top_p": [1e-9, 0.5, 1],
    "top_k": [-1, 0, 1, 64, 5000, 2**40, 2**63 - 1],
    "min_p": [0, 0.5, 1],
    "n": [1, 3, 16, 17],
    "stream": [True, False],
    "stop": ["a", ["a", "b"], ["\n"], [""], "<end_of_turn>"],
    "seed": [0, -1, 2**63 - 1, -2**63],
    "logprobs": [True, False],
    "top_logprobs": [0, 5, 20, 21],
    "logit_bias": [{"1": 100}, {"6": -100}, {str(i): 100 for i in range(30)}, {"447": 100}, {"463": 100},
                   {"99999": 1}],
    "presence_penalty": [-2, 0, 2],
    "frequency_penalty": [-2, 2],
    "repetition_penalty": [0.01, 1.5, 100],
    "response_format": [{"type": "json_object"},
                        {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                            "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}},
                        {"type": "json_schema", "json_schema": {"name": "e", "schema": {"enum": ["x", "yy"]}}}],
    "tools": [[{"type": "function", "function": {"name": "get", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]],
    "tool_choice": ["auto", "none", "required", {"type": "function", "function": {"name": "get"}}],
    "stream_options": [{"include_usage": True}],
    "cache_salt": ["a", "b"],
}


def chat_request(rng):
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": rng.choice(["system", "developer"]), "content": text(rng)})
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": content(rng)})
        if rng.random() < 0.4:
            messages.append({"role": "assistant", "content": text(rng)})
    body = {"model": MODEL, "messages": messages}
    for key in rng.sample(sorted(OPTIONS), rng.randint(0, 7)):
        body[key] = rng.choice(OPTIONS[key])
    if body.get("n", 1) > 3 and body.get("max_tokens", 16) > 16:
        body["max_tokens"] = 16
    if rng.random() < 0.25:
        # One field of the wrong type or out of range.
        body[rng.choice(sorted(OPTIONS) + ["model", "messages", "max_completion_tokens"])] = rng.choice(ODD)
    return body


def completion_request(rng):
    prompt = rng.choice(["Hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]], "", [], [10**9], rng.choice(ODD)])
    body = {"model": MODEL, "prompt": prompt, "max_tokens": rng.choice([1, 4, 10**6])}
    for key in rng.sample(["temperature", "top_k", "n", "stream", "logprobs", "seed", "stop"], rng.randint(0, 3)):
        body[key] = rng.choice(OPTIONS[key]) if key != "logprobs" else rng.choice([0, 5, 21, True])
    return body


BROKEN_BODIES = [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"messages": "x"}', b"1",
                 b'{"model":"medgemma-tiny","messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"max_tokens":5}']


def run(base, seed, count, failures):
    try:
        send_random(base, seed, count, failures)
    except Exception as e:  # noqa: BLE001 - a thread's failure must fail the test
        failures.append(f"seed {seed}: {e!r}")


def send_random(base, seed, count, failures):
    rng = random.Random(seed)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.75:
            path, body = "/v1/chat/completions", chat_request(rng)
        elif roll < 0.92:
            path, body = "/v1/completions", completion_request(rng)
        else:
            path, body = rng.choice(["/v1/chat/completions", "/v1/completions"]), rng.choice(BROKEN_BODIES)
        status, reply = post(base, path, body)
        wrong = problem(status, reply, body)
        if wrong:
            shown = body if isinstance(body, bytes) else json.dumps(body)[:400]
            failures.append(f"{path} {shown}: {wrong}")


def healthy(base):
    with urllib.request.urlopen(base + "/health", timeout=10) as r:
        return r.status == 200


def test_extreme_sampling_values_are_answered_or_refused(server):
    for top_k in (5000, 2**40, 2**63 - 1):
        for stream in (False, True):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                    "temperature": 1, "top_k": top_k, "seed": 1, "stream": stream}
            status, reply = post(server, "/v1/chat/completions", body)
            assert status == 200, (top_k, reply[:200])
            wrong = problem(status, reply, body)
            assert wrong is None, (top_k, wrong)
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 3, "top_k": 2**63 - 1, "n": 16, "temperature": 1}
    status, reply = post(server, "/v1/completions", body)
    assert status == 200 and len(json.loads(reply)["choices"]) == 16, reply[:200]
    assert healthy(server)


def test_random_requests_are_answered_or_refused_and_the_server_stays_healthy(server):
    failures = []
    threads = [threading.Thread(target=run, args=(server, seed, 100, failures)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, "\n".join(failures[:10])
    assert healthy(server)
