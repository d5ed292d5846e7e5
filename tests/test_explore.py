"""cnnzoo explore: the guard (token, cookie, Host), the JSON API on every family against torch's
own numbers, uploads that must be refused, and the page in a real browser (Playwright driving
Debian's chromium)."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx  # noqa: F401  (dev extra: the tests fail, never skip, without it)
import pytest
import starlette  # noqa: F401
import torch
from PIL import Image
from starlette.testclient import TestClient

from cnnzoo.explore.app import cookie_name, create_app
from cnnzoo.explore.engine import Explorer
from cnnzoo.explore.session import build_explorer, model_entry
from cnnzoo.visualize import feature_maps

TOKEN = "test-token"
ARTIFACTS = Path(__file__).parent / "artifacts"
# One model per family, each at (about) its smallest input, 10 classes: small and quick.
FAMILIES = {
    "lenet": ("lenet5", 32),
    "alexnet": ("alexnet", 63),
    "vgg": ("vgg11", 32),
    "googlenet": ("googlenet", 32),
    "resnet": ("resnet18", 32),  # its `downsample` shortcuts are modules (ResNet-20: none)
    "densenet": ("densenet121", 32),
    "mobilenet": ("mobilenet_v3_small", 32),
    "efficientnet": ("efficientnet_b0", 32),
    "mlp": ("mlp", 32),
}


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png() -> bytes:
    pixels = torch.zeros(12, 12, dtype=torch.uint8)
    pixels[2:10, 5:7] = 255  # a "1"
    return png_bytes(Image.fromarray(pixels.numpy(), mode="L"))


@pytest.fixture(scope="module")
def default() -> tuple[Explorer, TestClient]:
    explorer = build_explorer([], [], None)  # the shipped LeNet-5 on a built-in digit
    client = TestClient(create_app(explorer, TOKEN), base_url="http://127.0.0.1:8000")
    assert client.get("/api/session", params={"token": TOKEN}).status_code == 200  # cookie set
    return explorer, client


@pytest.fixture(scope="module")
def zoo() -> tuple[Explorer, TestClient]:
    torch.manual_seed(0)
    entries = [
        model_entry(name, None, family, side=side, num_classes=10)
        for family, (name, side) in FAMILIES.items()
    ]
    explorer = Explorer(entries)
    client = TestClient(create_app(explorer, TOKEN), base_url="http://127.0.0.1:8000")
    client.cookies.set(cookie_name(8000), TOKEN)
    image = client.post("/api/images", content=png_bytes(Image.new("RGB", (40, 40), "white")))
    rng = torch.Generator().manual_seed(0)
    noise = (torch.rand(40, 40, 3, generator=rng) * 255).to(torch.uint8).numpy()
    image = client.post("/api/images", content=png_bytes(Image.fromarray(noise)))
    assert image.status_code == 201, image.text
    return explorer, client


def image_key(explorer: Explorer) -> str:
    return next(reversed(explorer.images))


# --- the guard ----------------------------------------------------------------------------------


def test_every_request_needs_the_token_then_the_cookie(default):
    explorer, _ = default
    client = TestClient(create_app(explorer, TOKEN), base_url="http://127.0.0.1:8000")
    assert client.get("/").status_code == 403
    assert client.get("/api/session", params={"token": "wrong"}).status_code == 403
    assert client.get("/api/session", params={"token": "tökén"}).status_code == 403
    client.cookies.set(cookie_name(8000), "wrong")
    assert client.get("/api/session").status_code == 403
    client.cookies.clear()
    first = client.get("/", params={"token": TOKEN})
    assert first.status_code == 200 and "text/html" in first.headers["content-type"]
    assert "HttpOnly" in first.headers["set-cookie"]
    assert "default-src 'self'" in first.headers["content-security-policy"]
    assert client.get("/api/session").status_code == 200  # the cookie alone, from now on
    assert cookie_name(8000) in first.headers["set-cookie"]  # one per port: sessions apart
    other = TestClient(create_app(explorer, "other"), base_url="http://127.0.0.1:8001")
    other.cookies.set(cookie_name(8000), TOKEN)  # a cookie named for another port opens nothing
    assert other.get("/api/session").status_code == 403


def test_a_foreign_host_is_refused_even_with_the_token(default):
    explorer, _ = default
    app = create_app(explorer, TOKEN)
    evil = TestClient(app, base_url="http://attacker.example:8000")
    answer = evil.get("/api/session", params={"token": TOKEN})
    assert answer.status_code == 403 and "Host" in answer.text
    assert (
        TestClient(app, base_url="http://localhost:8000")
        .get("/api/session", params={"token": TOKEN})
        .status_code
        == 200
    )
    # Bound to every interface, the Host check is off and the token alone guards.
    anywhere = TestClient(create_app(explorer, TOKEN, None), base_url="http://myhost:1")
    assert anywhere.get("/api/session", params={"token": TOKEN}).status_code == 200


def test_static_files_are_a_fixed_list(default):
    _, client = default
    assert client.get("/static/app.js").status_code == 200
    for name in ("../engine.py", "..%2Fengine.py", "secrets.txt"):
        assert client.get(f"/static/{name}").status_code == 404
    assert "innerHTML" not in client.get("/static/app.js").text


# --- the default session: LeNet-5 trained on digits ------------------------------------------


def test_default_session_is_lenet5_trained_on_a_digit(default):
    explorer, client = default
    session = client.get("/api/session").json()
    assert session["models"][0]["label"].startswith("lenet5")
    assert session["images"][0]["name"].startswith("digit")
    top = client.get("/api/topk", params={"model": "m0", "image": image_key(explorer)}).json()
    digit = int(session["images"][0]["name"].split()[1])
    assert top["classes"][0]["name"] == str(digit)  # the trained network reads the digit
    # The softmax as torch computes it, on the logits of an independent forward pass.
    entry = explorer.models["m0"]
    x = explorer.prepared(entry, explorer.images[image_key(explorer)])
    with torch.no_grad():
        probs = entry.model(x).softmax(dim=1)[0]
    for c in top["classes"]:
        assert c["probability"] == pytest.approx(float(probs[c["class"]]), abs=1e-6)


def test_graph_is_the_analyzers_rows_grouped_by_block(default):
    from cnnzoo.analysis import summarize

    explorer, client = default
    graph = client.get("/api/graph", params={"model": "m0", "image": image_key(explorer)}).json()
    rows = summarize(explorer.models["m0"].model, (1, 32, 32)).layers
    layers = [layer for block in graph["blocks"] for layer in block["layers"]]
    assert [(la["name"], la["macs"], la["params"]) for la in layers] == [
        (r.name, r.macs, r.params) for r in rows
    ]
    assert layers[0]["output_shape"] == [1, 6, 28, 28] and layers[0]["rf_size"] == [5, 5]
    assert len(layers[0]["top_channels"]) == 4


def test_layer_maps_share_one_scale_and_decode_to_the_maps_size(default):
    explorer, client = default
    q = {"model": "m0", "image": image_key(explorer), "layer": 0}
    layer = client.get("/api/layer", params=q).json()
    assert layer["channels"] == 6 and len(layer["cells"]) == 6
    lo, hi = layer["scale"]["min"], layer["scale"]["max"]
    assert all(lo <= c["min"] <= c["max"] <= hi for c in layer["cells"])
    picture = client.get("/api/channel.png", params={**q, "channel": 5})
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size == (28, 28)
    # What the layer reads (here the image itself), for the window drawn on it.
    read = client.get("/api/input_channel.png", params={**q, "channel": 0})
    assert Image.open(io.BytesIO(read.content)).size == (32, 32)
    linear = client.get("/api/input_channel.png", params={**q, "layer": 8, "channel": 0})
    assert linear.status_code == 404
    missing = client.get("/api/channel.png", params={**q, "channel": 6})
    assert missing.status_code == 404 and "0 to 5" in missing.json()["error"]
    assert client.get("/api/layer", params={**q, "layer": 99}).status_code == 404


def torch_value(model, x, name, index):
    out = feature_maps(model, x, [name])[name][0]
    return float(out[index])


@pytest.mark.parametrize(
    ("layer", "index"),
    [(0, (3, 14, 9)), (2, (5, 7, 7)), (3, (15, 4, 6)), (6, (100, 0, 0)), (8, (40,)), (10, (1,))],
)
def test_lenet_neuron_written_out_equals_torch(default, layer, index):
    explorer, client = default
    entry = explorer.models["m0"]
    channel, y, x = (*index, 0, 0)[:3]
    q = {"model": "m0", "image": image_key(explorer), "layer": layer}
    d = client.get("/api/neuron", params={**q, "channel": channel, "y": y, "x": x}).json()
    prepared = explorer.prepared(entry, explorer.images[image_key(explorer)])
    expected = torch_value(entry.model, prepared, d["name"], index)
    assert d["value"] == pytest.approx(expected, abs=1e-6)
    assert d["computed"] == pytest.approx(expected, abs=1e-5 * max(1, abs(expected)))
    if d["kind"] == "conv":  # the written-out sums are the products' sums, by hand
        for c in d["channels"]:
            pairs = zip(c["window"], c["kernel"], strict=True)
            hand = sum(a * b for wr, kr in pairs for a, b in zip(wr, kr, strict=True))
            assert c["sum"] == pytest.approx(hand, rel=1e-9, abs=1e-12)
        assert d["sum"] == pytest.approx(sum(d["channel_sums"].values()))
        assert d["following"][0]["type"] == "Tanh"
        assert d["following"][0]["value"] == pytest.approx(torch.tanh(torch.tensor(expected)))
        rf = client.get(
            "/api/receptive_field", params={**q, "channel": channel, "y": y, "x": x}
        ).json()
        top, left, bottom, right = rf["box"]
        size = rf["theoretical_size"][0]  # c1: 5×5 at stride 1, no padding: exactly its window
        if layer == 0:
            assert [top, left, bottom, right] == [y, x, y + size, x + size]
        assert 0 < bottom - top <= size and 0 < right - left <= size
        # On the layer's input (the previous layer's maps: s2's 6×14×14 for c3), by hand: a
        # 5×5 window at stride 1 without padding starts at (y, x).
        assert rf["input_box"] == [y, x, y + 5, x + 5]
        assert rf["input_shape"] == [1, *entry.rows[layer].input_shape[1:]]
    if d["kind"] == "pool":
        window = [v for row in d["window"] for v in row]
        assert d["computed"] == pytest.approx(sum(window) / len(window))


def test_cam_filters_and_the_input_as_the_model_sees_it(default):
    explorer, client = default
    q = {"model": "m0", "image": image_key(explorer)}
    seen = client.get("/api/input.png", params=q)
    assert Image.open(io.BytesIO(seen.content)).size == (32, 32)
    cam = client.get("/api/cam.png", params={**q, "class": 3})
    assert cam.status_code == 200 and Image.open(io.BytesIO(cam.content)).size == (32, 32)
    assert client.get("/api/cam.png", params={**q, "class": 10}).status_code == 404
    assert client.get("/api/filters.png", params={"model": "m0"}).status_code == 200
    assert "resize" in client.get("/api/session").json()["models"][0]["preprocessing"]


# --- every family -----------------------------------------------------------------------------


def _pick(rows, kinds):
    """A row of each wanted type whose module runs once (so torch's hook sees the same call)."""
    names = [r.name for r in rows]
    picked = {}
    for i, r in enumerate(rows):
        if r.type in kinds and names.count(r.name) == 1 and r.output_shape:
            picked.setdefault(r.type, []).append(i)
    return [v[len(v) // 2] for v in picked.values()]  # the middle one of each type


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_through_the_api(zoo, family):
    explorer, client = zoo
    image = image_key(explorer)
    q = {"model": family, "image": image}
    graph = client.get("/api/graph", params=q).json()
    assert graph["layers"] == len(explorer.models[family].rows)
    entry = explorer.models[family]
    prepared = explorer.prepared(entry, explorer.images[image])
    kinds = {"Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d"}
    picked = _pick(entry.rows, kinds)
    maps = feature_maps(entry.model, prepared, [entry.rows[i].name for i in picked])
    for layer in picked:
        shape = entry.rows[layer].output_shape[1:]
        index = tuple(s // 2 for s in shape)
        channel, y, x = (*index, 0, 0)[:3]
        d = client.get(
            "/api/neuron", params={**q, "layer": layer, "channel": channel, "y": y, "x": x}
        ).json()
        expected = float(maps[d["name"]][0][index])
        assert d["value"] == pytest.approx(expected, abs=1e-5 * max(1, abs(expected))), d["name"]
        assert d["computed"] == pytest.approx(expected, abs=1e-4 * max(1, abs(expected))), d["name"]
    top = client.get("/api/topk", params=q).json()
    assert len(top["classes"]) == 5
    assert sum(c["probability"] for c in top["classes"]) <= 1 + 1e-9


def test_the_field_on_the_previous_layers_maps_is_the_window_cut_at_the_edges(zoo):
    explorer, client = zoo
    entry = explorer.models["resnet"]
    names = [r.name for r in entry.rows]
    q = {"model": "resnet", "image": image_key(explorer)}
    conv = names.index("layer2.0.conv1")  # 3×3, stride 2, padding 1 on layer1's 8×8 maps
    pool = names.index("maxpool")  # 3×3, stride 2, padding 1 on the stem's 16×16 maps
    for layer, side in ((conv, 8), (pool, 16)):
        for y, x in ((0, 0), (2, 1), (3, 3)):
            params = {**q, "layer": layer, "channel": 1, "y": y, "x": x}
            rf = client.get("/api/receptive_field", params=params).json()
            # rows 2y − 1 … 2y + 1 (columns alike), those outside the map dropped
            by_hand = [
                max(0, 2 * y - 1),
                max(0, 2 * x - 1),
                min(side, 2 * y + 2),
                min(side, 2 * x + 2),
            ]
            if layer == pool:  # max pooling: the gradient reaches the kept cell only
                top, left, bottom, right = rf["input_box"]
                assert bottom - top == right - left == 1
                assert by_hand[0] <= top < by_hand[2] and by_hand[1] <= left < by_hand[3]
            else:
                assert rf["input_box"] == by_hand, (y, x)
            assert rf["input_shape"][2:] == [side, side]


def test_a_shortcut_without_a_layer_is_found_on_resnet20():
    """ResNet-20's option-A shortcuts have no module (so no row): the first pass finds the
    sums, and the units where the shortcut subsamples and zero-pads (the first of stages 2
    and 3)."""
    entry = model_entry("resnet20", None, "m", num_classes=10)
    explorer = Explorer([entry])
    key = explorer.add_image(png_bytes(Image.new("RGB", (32, 32), "white")), "w.png").key
    shortcuts = explorer.graph("m", key)["shortcuts"]
    units = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]  # 3 stages of 3 blocks
    assert [s["unit"] for s in shortcuts] == units
    assert not any(s["module"] for s in shortcuts)
    assert [s["unit"] for s in shortcuts if s["padded"]] == ["layer2.0", "layer3.0"]
    assert explorer.graph("m")["shortcuts"] == shortcuts  # known once the model has run
    plain = Explorer([model_entry("plain20", None, "p", num_classes=10)])
    plain.add_image(png_bytes(Image.new("RGB", (32, 32), "white")), "w.png")
    assert plain.graph("p", key)["shortcuts"] == []  # the same stack without shortcuts


# --- uploads ----------------------------------------------------------------------------------


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width × height, with almost no data (never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"hello, I am a text file\n", 415, "not an image"),
        (digit_png()[:60], 400, "damaged"),
        (b"", 400, "empty"),
        (huge_png(20000, 20000), 413, "megapixels"),
    ],
    ids=["text", "truncated-png", "empty", "20000x20000"],
)
def test_bad_uploads_are_refused_and_the_next_good_one_works(default, content, status, words):
    _, client = default
    answer = client.post("/api/images", content=content, headers={"X-Filename": "bad.png"})
    assert answer.status_code == status
    assert words in answer.json()["error"] and "bad.png" in answer.json()["error"]
    good = client.post("/api/images", content=digit_png(), headers={"X-Filename": "one.png"})
    assert good.status_code == 201
    key = good.json()["key"]
    q = {"model": "m0", "image": key}
    assert client.get("/api/topk", params=q).json()["classes"][0]["name"] == "1"


def test_an_upload_over_the_size_limit_is_refused(default, monkeypatch):
    explorer, client = default
    monkeypatch.setattr(explorer, "max_upload", 1000)
    answer = client.post("/api/images", content=b"\0" * 5000)
    assert answer.status_code == 413 and "limit" in answer.json()["error"]


def test_the_cache_is_bounded_by_bytes(default, monkeypatch):
    explorer, _ = default
    key = image_key(explorer)
    entry = explorer.models["m0"]
    acts = explorer.activations("m0", key)
    assert acts.complete and acts.nbytes == entry.kept_bytes + 4 * 10  # estimate + the logits
    monkeypatch.setattr(explorer, "cache", type(explorer.cache)())
    monkeypatch.setattr(explorer, "cache_bytes", entry.kept_bytes - 1)  # one pair does not fit
    monkeypatch.setattr(explorer, "notes", [])
    light = explorer.activations("m0", key)
    assert not light.complete and light.nbytes < acts.nbytes
    assert list(explorer.cache) == [("m0", key)]  # the overview's part is kept
    assert "do not fit" in explorer.notes[0] and "up to that layer" in explorer.notes[0]
    monkeypatch.setattr(explorer, "cache", type(explorer.cache)())
    monkeypatch.setattr(explorer, "cache_bytes", 100)  # not even the overview's maps fit
    monkeypatch.setattr(explorer, "notes", [])
    assert explorer.layer("m0", key, 0)["channels"] == 6
    assert not explorer.cache and "runs the model again" in explorer.notes[0]


@pytest.fixture(scope="module")
def tiny_cache(default):
    """The shipped LeNet-5 in a session whose cache cannot hold one image's activations: the
    overview's part (scales, top channels and their maps) plus about one layer."""
    entry = default[0].models["m0"]
    small = Explorer([entry], cache_bytes=entry.kept_bytes - 1)
    small.add_image(digit_png(), "one.png")
    key = image_key(small)
    light = small.activations("m0", key)
    small.cache_bytes = light.nbytes + 20_000  # c1's output (18.8 kB), not with its input
    full = Explorer([entry])  # the default bound: every layer kept
    full.add_image(digit_png(), "one.png")
    assert full.activations("m0", key).complete
    return full, small, key


def test_a_pair_over_the_cache_answers_layer_by_layer_as_the_cached_one(tiny_cache):
    full, small, key = tiny_cache
    entry = small.models["m0"]
    assert not small.activations("m0", key).complete
    seen_keys = set()
    for layer, row in enumerate(entry.rows):
        assert small.layer("m0", key, layer) == full.layer("m0", key, layer), row.name
        shape = row.output_shape[1:]
        index = tuple(s // 2 for s in shape)
        c, y, x = (*index, 0, 0)[:3]
        a, b = small.neuron("m0", key, layer, c, y, x), full.neuron("m0", key, layer, c, y, x)
        assert a == b, row.name
        tops = small.top_channels(small.activations("m0", key), layer)
        assert tops == full.top_channels(full.activations("m0", key), layer)
        for channel in {*tops[:1], shape[0] - 1} if len(shape) == 3 else {0}:
            assert small.channel_png("m0", key, layer, channel) == full.channel_png(
                "m0", key, layer, channel
            ), (row.name, channel)  # a thumbnail kept by the pass, and a map computed again
        if row.input_shape and len(row.input_shape) == 4:
            assert small.input_channel_png("m0", key, layer, 0) == full.input_channel_png(
                "m0", key, layer, 0
            )
        if row.type == "Conv2d":
            rf_small = small.receptive_field("m0", key, layer, c, y, x)
            rf_full = full.receptive_field("m0", key, layer, c, y, x)
            assert rf_small["input_box"] == rf_full["input_box"]
            assert rf_small["box"] == rf_full["box"] or "over the" in rf_small["note"]
        assert small.cached_bytes() <= small.cache_bytes
        seen_keys |= set(small.cache)
    assert small.topk("m0", key) == full.topk("m0", key)
    # The bound was met by letting layers go: more were kept over time than fit at once.
    assert len(seen_keys) > len(small.cache) > 1


def test_a_click_runs_the_model_only_up_to_the_layer(tiny_cache):
    _, small, key = tiny_cache
    model = small.models["m0"].model
    calls = []
    handle = model.get_submodule("output").register_forward_hook(lambda *a: calls.append(1))
    try:
        small.cache.clear()
        small.layer("m0", key, 0)  # the overview's pass (to the end), then c1's (stopped)
        assert len(calls) == 1
        small.neuron("m0", key, 0, 1, 3, 3)  # c1's output and input: already kept
        small.input_channel_png("m0", key, 2, 0)  # s2's input, computed alone
        assert len(calls) == 1
    finally:
        handle.remove()


# --- the command --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--weights", "none.safetensors"], "none.safetensors"),
        (["--model", "resnet5"], "resnet5"),
        (["--port", "-1"], "--port"),
        (["--image", "missing.png"], "missing.png"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, words, capsys, tmp_path, monkeypatch):
    from cnnzoo.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["explore", "--no-browser", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_the_command_prints_its_address_and_warns_on_every_interface(host, capsys, monkeypatch):
    import cnnzoo.explore.cli as explore_cli
    from cnnzoo.cli import main

    served = []
    monkeypatch.setattr(explore_cli, "serve", lambda app, sock: served.append((app, sock)))
    assert main(["explore", "--no-browser", "--host", host]) == 0
    out, err = capsys.readouterr()
    app, sock = served[0]
    port = sock.getsockname()[1]
    sock.close()
    # The whole token, then the line's end (a token may end in "-", after which \b never holds).
    assert re.search(rf"http://127\.0\.0\.1:{port}/\?token={re.escape(app.token)}$", out, re.M)
    if host == "0.0.0.0":
        assert "warning" in err and "every network" in err and app.hosts is None
    else:
        assert not err.strip() and "127.0.0.1" in app.hosts and "evil.example" not in app.hosts


# --- the page in a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "explore", "--no-browser", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        yield match.group(1), match.group(2)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_server_refuses_a_request_without_its_token(server):
    import urllib.error
    import urllib.request

    base, token = server
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/session", timeout=30)
    assert refused.value.code == 403
    with urllib.request.urlopen(f"{base}/?token={token}", timeout=30) as answer:
        assert answer.status == 200


def test_the_page_in_a_browser(server, tmp_path):
    import playwright.sync_api as playwright  # make test installs chromium; never skipped

    expect = playwright.expect
    from cnnzoo.explore.session import default_weights
    from cnnzoo.weights import load_weights

    base, token = server
    ARTIFACTS.mkdir(exist_ok=True)
    digit = tmp_path / "one.png"
    digit.write_bytes(digit_png())
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{base}/?token={token}")
            page.wait_for_selector("#layer-0")
            page.set_input_files("#file", str(digit))
            # The page's CSP forbids eval, so the waits are Playwright's own (no JS strings).
            key = hashlib.sha256(digit.read_bytes()).hexdigest()[:16]
            expect(page.locator("#image")).to_have_value(key, timeout=60_000)
            expect(page.locator("#message")).to_contain_text("Ready", timeout=60_000)
            page.click("#layer-0")
            cell = page.wait_for_selector("#grid img[data-channel='3']")
            box = cell.bounding_box()
            # The cell's map is 28×28: the click at 60% across, 40% down is (row 11, col 16).
            cell.click(position={"x": 0.6 * box["width"], "y": 0.4 * box["height"]})
            page.wait_for_selector("#neuron-value")
            title = page.text_content("#neuron-title")
            assert "channel 3, row 11, column 16" in title, title
            shown = float(page.text_content("#neuron-value"))
            # c1 reads the image: its 5×5 window at (11, 16), drawn on the layer's input
            expect(page.locator("#rf-previous")).to_contain_text("rows 11–15, columns 16–20")
            page.click("text=slide the window")  # the kernel sliding: it runs without errors
            page.screenshot(path=str(ARTIFACTS / "explore_neuron.png"), full_page=True)

            model, _ = load_weights(None, default_weights())
            with Image.open(digit) as img:
                x = model.pretrained_cfg.prepare(img).unsqueeze(0)
            expected = float(feature_maps(model, x, ["c1"])["c1"][0, 3, 11, 16])
            assert shown == pytest.approx(expected, abs=1e-4)

            # c3 reads s2's 6×14×14 maps: its 5×5 window, drawn on the channels it reads most.
            page.click("#layer-3")
            cell = page.wait_for_selector("#grid img[data-channel='7']")
            box = cell.bounding_box()
            cell.click(position={"x": 0.45 * box["width"], "y": 0.25 * box["height"]})
            expect(page.locator("#neuron-title")).to_contain_text("c3 (Conv2d), channel 7")
            title = page.text_content("#neuron-title")
            y, x = map(int, re.search(r"row (\d+), column (\d+)", title).groups())
            previous = page.locator("#rf-previous")
            expect(previous).to_contain_text("6×14×14")
            expect(previous).to_contain_text(f"rows {y}–{y + 4}, columns {x}–{x + 4}")
            assert previous.locator("img").count() == 4
            page.screenshot(path=str(ARTIFACTS / "explore_previous.png"), full_page=True)

            page.set_input_files("#file", str(text))
            expect(page.locator("#message.error")).to_contain_text("not an image")
            page.screenshot(path=str(ARTIFACTS / "explore_refused.png"))
            page.set_input_files("#file", str(digit))
            expect(page.locator("#message")).to_contain_text("Ready")
            assert not errors, errors
        finally:
            browser.close()


LOAD_CACHE_GB = 0.008  # two of ResNet-20's 3.9 MB pairs: the load below would hold 22


def _rss_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))


def test_under_load_every_request_is_answered_within_the_memory_bound(tmp_path):
    """50 concurrent requests (uploads, one of them refused, and clicks on 25 images) to a
    real server on 127.0.0.1 whose cache holds two images' activations: all are answered, the
    server answers afterwards, and its peak RSS (VmHWM, reset after a warm-up) grows by less
    than the cache bound plus 64 MB (without the bound it would hold 22 × 3.9 MB)."""
    import json
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    command = [sys.executable, "-m", "cnnzoo", "explore", "--no-browser", "--port", "0",
               "--model", "resnet20", "--cache-gb", str(LOAD_CACHE_GB)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        base, token = match.groups()

        def call(path: str, params: dict | None = None, body: bytes | None = None) -> int:
            query = "&".join(f"{k}={v}" for k, v in {**(params or {}), "token": token}.items())
            request = urllib.request.Request(f"{base}{path}?{query}", data=body)
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    answer.read()
                    return answer.status
            except urllib.error.HTTPError as err:
                return err.code

        def noise(seed: int) -> bytes:
            rng = torch.Generator().manual_seed(seed)
            pixels = (torch.rand(32, 32, 3, generator=rng) * 255).to(torch.uint8).numpy()
            return png_bytes(Image.fromarray(pixels))

        images = [noise(seed) for seed in range(31)]
        keys = [hashlib.sha256(data).hexdigest()[:16] for data in images]
        for data in images[:22]:  # uploads keep the decoded image only: no pass yet
            assert call("/api/images", body=data) == 201
        clicks = [
            ("/api/graph", {}), ("/api/layer", {"layer": 20}),
            ("/api/channel.png", {"layer": 40, "channel": 3}),
            ("/api/neuron", {"layer": 30, "channel": 5, "y": 4, "x": 4}),
            ("/api/topk", {}),
            ("/api/receptive_field", {"layer": 10, "channel": 1, "y": 2, "x": 3}),
        ]  # fmt: skip
        for path, params in clicks:  # warm-up: every kind of answer once (imports, buffers)
            assert call(path, {"model": "m0", "image": keys[0], **params}) == 200, path
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # resets VmHWM
        before = _rss_kb(process.pid, "VmRSS")
        jobs = [("/api/images", {}, images[22 + i], 201) for i in range(9)]
        jobs.append(("/api/images", {}, b"not an image", 415))
        for i in range(40):
            path, params = clicks[i % len(clicks)]
            jobs.append((path, {"model": "m0", "image": keys[i % 22], **params}, None, 200))
        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(lambda j: call(j[0], j[1], j[2]), jobs))
        assert codes == [expected for *_, expected in jobs]
        peak = _rss_kb(process.pid, "VmHWM")
        # Still answering: the session lists every image (the digit, 31 uploads), a click works.
        session = urllib.request.urlopen(f"{base}/api/session?token={token}", timeout=30)
        assert len(json.loads(session.read())["images"]) == 32
        assert call("/api/topk", {"model": "m0", "image": keys[-1]}) == 200
        growth = (peak - before) * 1024
        assert growth < LOAD_CACHE_GB * 1e9 + 64 * 2**20, (before, peak)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def zoo_server(zoo):
    """The per-family session, served by uvicorn in a thread on a free port."""
    import socket
    import threading

    import uvicorn

    explorer, _ = zoo
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = create_app(explorer, TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", explorer
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_switching_to_residual_inception_and_dense_models(zoo_server):
    import playwright.sync_api as playwright  # make test installs chromium; never skipped

    expect = playwright.expect
    base, explorer = zoo_server
    image = image_key(explorer)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{base}/?token={TOKEN}")
            expect(page.locator("#message")).to_contain_text("Ready", timeout=60_000)
            page.select_option("#image", image)
            for family, layer_name, structure in (
                ("resnet", "layer2.0.conv2", "the shortcut, added to"),
                ("googlenet", "inception3a.branch2.1.conv", "a parallel path on"),
                ("densenet", "features.denseblock2.denselayer3.conv1", "concatenated to its"),
            ):  # fmt: skip
                page.select_option("#model", family)
                # Generous waits: a first forward pass on a loaded machine takes seconds.
                expect(page.locator("#totals")).to_contain_text(
                    family_name(explorer, family), timeout=60_000
                )
                expect(page.locator("#message")).to_contain_text("Ready", timeout=60_000)
                entry = explorer.models[family]
                index = [r.name for r in entry.rows].index(layer_name)
                page.click(f"#layer-{index}")
                cell = page.wait_for_selector("#grid img[data-channel='2']")
                box = cell.bounding_box()  # Playwright's click waits for the cell to be still
                cell.click(position={"x": 0.3 * box["width"], "y": 0.7 * box["height"]})
                expect(page.locator("#neuron-title")).to_contain_text(layer_name)
                title = page.text_content("#neuron-title")
                y, x = map(int, re.search(r"row (\d+), column (\d+)", title).groups())
                prepared = explorer.prepared(entry, explorer.images[image])
                with explorer.lock:  # the server may be running this model (the field's pass)
                    maps = feature_maps(entry.model, prepared, [layer_name])
                expected = float(maps[layer_name][0, 2, y, x])
                assert float(page.text_content("#neuron-value")) == pytest.approx(
                    expected, abs=1e-4 * max(1, abs(expected))
                )
                page.screenshot(path=str(ARTIFACTS / f"explore_{family}.png"), full_page=True)
                labels = page.locator(".path-label").all_text_contents()
                assert any(structure in t for t in labels), (family, labels[:3])
                if family == "resnet":  # layer1's units add their input with no layer
                    assert any(t.startswith("layer1.0: output = F(x) + x") for t in labels)
            assert not errors, errors
        finally:
            browser.close()


def family_name(explorer: Explorer, key: str) -> str:
    return explorer.models[key].label.split()[0]
