"""The official openai Python client against medgemma-server."""
import openai
import pytest

MODEL = "medgemma-tiny"


def natural(goldens, name):
    p = goldens["prompts"][name]
    n = len(p["natural"]["ids"])
    max_tokens = n + 3 if p["natural"]["finish_reason"] == "stop" else n
    return p, max_tokens


def test_chat_greedy_equals_golden_text(client, goldens):
    for name in ("short", "system_multi_turn", "non_ascii"):
        p, max_tokens = natural(goldens, name)
        r = client.chat.completions.create(model=MODEL, messages=p["messages"], temperature=0, max_tokens=max_tokens)
        assert r.choices[0].finish_reason == p["natural"]["finish_reason"], name
        if "<" not in p["natural"]["text"]:
            assert r.choices[0].message.content == p["natural"]["text"], name
        assert r.usage.prompt_tokens == len(p["input_ids"])


def test_streamed_chat_deltas_equal_the_plain_answer(client, goldens):
    p, max_tokens = natural(goldens, "long_past_window")
    plain = client.chat.completions.create(model=MODEL, messages=p["messages"], temperature=0, max_tokens=max_tokens)
    stream = client.chat.completions.create(model=MODEL, messages=p["messages"], temperature=0, max_tokens=max_tokens,
                                            stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_logprobs_match_transformers(client, goldens):
    p = goldens["prompts"]["short"]
    r = client.chat.completions.create(model=MODEL, messages=p["messages"], temperature=0, max_tokens=3,
                                       logprobs=True, top_logprobs=5)
    content = r.choices[0].logprobs.content
    assert len(content) == 3
    for step, entry in enumerate(content):
        assert len(entry.top_logprobs) == 5
        assert abs(entry.logprob - p["greedy_top5"][step][0][1]) < 1e-4


def test_n_and_seeded_sampling(client):
    msgs = [{"role": "user", "content": "Describe the lesion."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, n=2, max_tokens=8, temperature=1.0, seed=11)
    assert [c.index for c in r.choices] == [0, 1]
    again = client.chat.completions.create(model=MODEL, messages=msgs, n=2, max_tokens=8, temperature=1.0, seed=11)
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]


def test_stop_strings_are_not_emitted(client, goldens):
    p, _ = natural(goldens, "short")
    text = p["natural"]["text"]
    stop = text[8:11]
    r = client.chat.completions.create(model=MODEL, messages=p["messages"], temperature=0, max_tokens=40, stop=[stop])
    assert r.choices[0].message.content == text[: text.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_completions_plain_and_streamed(client):
    r = client.completions.create(model=MODEL, prompt="Chest X-ray shows", max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Chest X-ray shows", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_models_and_errors(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("google/other-model")


def test_json_mode_gives_json(client):
    msgs = [{"role": "user", "content": "List the findings as JSON."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, response_format={"type": "json_object"},
                                       temperature=0, max_tokens=8)
    assert r.choices[0].message.content.startswith("{")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=msgs, functions=[{"name": "lookup"}])
    assert e.value.body["param"] == "functions"


def test_tool_calls_with_the_sdk(client):
    """tool_choice required gives calls the SDK parses (pydantic_function_tool
    included); streamed deltas rebuild the same calls; the next turn takes the
    calls and their results back."""
    import json
    from typing import Literal

    from pydantic import BaseModel, Field

    class GetLabs(BaseModel):
        panel: Literal["cbc", "bmp"]
        days: int = Field(ge=1, le=7)

    msgs = [{"role": "user", "content": "Check the blood count."}]
    tools = [openai.pydantic_function_tool(GetLabs)]
    got = 0
    for seed in range(6):
        try:
            r = client.chat.completions.parse(model=MODEL, messages=msgs, tools=tools, tool_choice="required",
                                              temperature=1.0, seed=seed, max_tokens=200)
        except openai.LengthFinishReasonError:
            continue  # a random model may not finish its call in time
        c = r.choices[0]
        assert c.finish_reason == "tool_calls"
        call = c.message.tool_calls[0]
        assert call.function.name == "GetLabs"
        assert isinstance(call.function.parsed_arguments, GetLabs)
        got += 1
        stream = client.chat.completions.create(model=MODEL, messages=msgs, tools=tools, tool_choice="required",
                                                temperature=1.0, seed=seed, max_tokens=200, stream=True)
        names, args = {}, {}
        for chunk in stream:
            for d in chunk.choices[0].delta.tool_calls or []:
                names[d.index] = (names.get(d.index) or "") + (d.function.name or "")
                args[d.index] = (args.get(d.index) or "") + (d.function.arguments or "")
        assert [names[k] for k in sorted(names)] == [t.function.name for t in c.message.tool_calls]
        assert [json.loads(args[k]) for k in sorted(args)] == [json.loads(t.function.arguments) for t in c.message.tool_calls]
        # The SDK's stream helper closes every call (the finish reason comes after them).
        with client.chat.completions.stream(model=MODEL, messages=msgs, tools=tools, tool_choice="required",
                                            temperature=1.0, seed=seed, max_tokens=200) as events:
            done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
        assert len(done) == len(c.message.tool_calls)
        assert all(isinstance(e.parsed_arguments, GetLabs) for e in done)
        history = msgs + [c.message.model_dump(exclude_none=True, exclude={"parsed"}),
                          {"role": "tool", "tool_call_id": call.id, "content": "Hb 9.1 g/dL"}]
        nxt = client.chat.completions.create(model=MODEL, messages=history, tools=tools, max_tokens=4)
        assert nxt.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert got > 0


def test_structured_output_parses_into_pydantic_models(client):
    """The SDK's parse(): a pydantic model becomes a strict JSON schema
    ($defs, $ref, enums, bounds, Optional as anyOf with null); every answer the
    server finishes parses into the model, in plain and streamed requests."""
    from typing import Literal, Optional

    from pydantic import BaseModel, Field

    class Lesion(BaseModel):
        location: Literal["RUL", "RLL", "LUL", "LLL"]
        size_mm: int = Field(ge=1, le=60)

    class Report(BaseModel):
        finding: Literal["normal", "effusion", "nodule"]
        urgent: bool
        lesions: list[Lesion] = Field(max_length=2)
        side: Optional[Literal["left", "right"]]
        code: str = Field(pattern=r"^[A-Z][0-9]{2}$")

    msgs = [{"role": "user", "content": "Report the chest X-ray findings."}]
    parsed = 0
    for seed in range(6):
        try:
            r = client.chat.completions.parse(model=MODEL, messages=msgs, response_format=Report,
                                              temperature=1.0, seed=seed, max_tokens=300)
        except openai.LengthFinishReasonError:
            continue  # a random model may spend its tokens on whitespace
        report = r.choices[0].message.parsed
        assert isinstance(report, Report)
        assert all(1 <= lesion.size_mm <= 60 for lesion in report.lesions)
        parsed += 1
    assert parsed > 0
    with client.chat.completions.stream(model=MODEL, messages=msgs, response_format=Report,
                                        temperature=0, max_tokens=300) as stream:
        final = stream.get_final_completion()
    if final.choices[0].finish_reason == "stop":
        assert isinstance(final.choices[0].message.parsed, Report)
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=msgs, response_format=bad)
    assert e.value.body["param"] == "response_format"
    assert "uniqueItems" in e.value.body["message"]


def test_wrong_key_is_refused(server):
    from openai import OpenAI

    bad = OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_images_as_data_urls(client):
    import base64
    import json
    import pathlib

    fixtures = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
    g = json.loads((fixtures / "tiny-gemma3" / "image_goldens.json").read_text())
    p = g["prompts"]["two_images"]
    files = iter(p["images"])
    content = []
    for part in p["messages"][0]["content"]:
        if part["type"] == "image":
            data = base64.b64encode((fixtures / "images" / next(files)).read_bytes()).decode()
            content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
        else:
            content.append(part)
    bias = {str(i): -100 for i in g["eos_suppressed_in_greedy"]}
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                       temperature=0, max_tokens=4, logprobs=True, top_logprobs=1, logit_bias=bias)
    assert r.usage.prompt_tokens == len(p["input_ids"])
    for step, entry in enumerate(r.choices[0].logprobs.content):
        assert abs(entry.logprob - p["greedy_top5"][step][0][1]) < 1e-3
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]}])


def test_dicom_image_parts_read_as_their_reference_png(client):
    import base64
    import pathlib

    dicom_dir = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "dicom"

    def ask(name, mime):
        data = base64.b64encode((dicom_dir / name).read_bytes()).decode()
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
            {"type": "text", "text": "Findings?"}]}], temperature=0, max_tokens=3)

    dicom = ask("ct_rle.dcm", "application/dicom")
    png = ask("ct_rle.png", "image/png")
    assert dicom.usage.prompt_tokens == png.usage.prompt_tokens
    assert dicom.choices[0].message.content == png.choices[0].message.content
    # A file whose transfer syntax says RLE over native pixels is refused, naming DICOM.
    raw = bytearray((dicom_dir / "mr.dcm").read_bytes())
    at = raw.index(b"1.2.840.10008.1.2.1\0")
    raw[at:at + 20] = b"1.2.840.10008.1.2.5\0"
    data = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:application/dicom;base64,{data}"}}]}])
    assert "DICOM" in str(e.value)


def test_a_key_past_its_rate_gets_the_sdks_rate_limit_error(tmp_path):
    from openai import OpenAI

    from conftest import start_server

    keys = tmp_path / "keys"
    keys.write_text("slow-key requests_per_minute=2\nother-key\n")
    proc, base = start_server(["--api-key-file", str(keys)])
    try:
        ask = dict(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        slow = OpenAI(base_url=base + "/v1", api_key="slow-key", max_retries=0)
        for _ in range(2):
            slow.chat.completions.create(**ask)
        with pytest.raises(openai.RateLimitError) as e:
            slow.chat.completions.create(**ask)
        assert e.value.code == "rate_limit_exceeded"
        # A bucket of 2 a minute holds the next request again in 30 s; the SDKs
        # wait that long before a retry.
        assert int(e.value.response.headers["retry-after"]) in (29, 30)
        other = OpenAI(base_url=base + "/v1", api_key="other-key", max_retries=0)
        assert other.chat.completions.create(**ask).choices[0].finish_reason
    finally:
        proc.terminate()
        proc.wait(timeout=30)
