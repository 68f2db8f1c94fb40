"""`make demo ONLINE=1` / `senclip_paper --preset demo --set online=true`: the released SenCLIP ViT-B/32 and OpenAI
CLIP ViT-B/32, downloaded through the registry, evaluated on the bundled sample and used to map the bundled scene,
in one labelled section of the report. Run against the local Hugging Face server of the checkpoint tests
(tests/data/checkpoints/hub.py) serving format-faithful files written from seeded random full-size ViT-B/32 weights:
the authors' `.ckpt` (the `clip` package's fp32 state dict) and open_clip's `open_clip_model.safetensors`. Every
other host is routed to a recording proxy that refuses: nothing may reach it."""
import http.server
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "data" / "checkpoints"))
import hub  # noqa: E402
import make  # noqa: E402

from senclip.paper import ONLINE_LABEL, ONLINE_MODELS, notebook_parameters, parse_sets, quiet_missing_ids  # noqa: E402


def test_online_setting_parses():
    assert parse_sets(["online=true"])[0] == {"online": True}
    assert parse_sets(["online=0"])[0] == {"online": False}


def test_missing_cell_ids_warning_silenced_only(tmp_path):
    "A user's notebook written without cell ids: nbformat's MissingIDFieldWarning is silenced, other warnings still show."
    from nbformat.warnings import MissingIDFieldWarning

    raw = json.loads((ROOT / "nbs" / "paper" / "training_curves.ipynb").read_text())
    for c in raw["cells"]:  # the project's notebooks have ids (tests/test_project.py); older tools wrote none
        c.pop("id", None)
    nb = tmp_path / "no_ids.ipynb"
    nb.write_text(json.dumps(raw))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        notebook_parameters(nb)
        with quiet_missing_ids():
            warnings.warn("still shown", UserWarning)
    assert [x.category for x in w] == [UserWarning], [str(x.message)[:80] for x in w]
    assert not any(issubclass(x.category, MissingIDFieldWarning) for x in w)


class _RefusingProxy(http.server.BaseHTTPRequestHandler):
    "HTTP(S)_PROXY for every host but 127.0.0.1: records what was asked and refuses it."
    seen: list = []

    def log_message(self, *a):
        pass

    def _refuse(self):
        self.seen.append((self.command, self.path))
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_CONNECT = _refuse


def _write_hub(www: Path, tmp: Path):
    "The two repositories with the files the registry resolves (and the other small files the real repos carry)."
    from safetensors.torch import save_file

    senclip = make.random_clip("ViT-B-32-quickgelu", seed=21)
    make.write_hf_repo(www, "pallavijainpj/SenCLIP", {
        "README.md": b"# SenCLIP\n",
        "SenCLIP_AvgPool_ViTB32.ckpt": make.write_authors_ckpt(senclip, tmp / "a.ckpt"),
    })
    del senclip
    clip = make.random_clip("ViT-B-32-quickgelu", seed=22)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp / "oc.safetensors"))
    del clip
    make.write_hf_repo(www, "timm/vit_base_patch32_clip_224.openai", {
        "README.md": b"---\nlibrary_name: open_clip\n---\n",
        "open_clip_config.json": json.dumps({"model_cfg": {"embed_dim": 512, "quick_gelu": True, "vision_cfg": {
            "image_size": 224, "layers": 12, "width": 768, "patch_size": 32}, "text_cfg": {
            "context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}},
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                               "std": [0.26862954, 0.26130258, 0.27577711]}}).encode(),
        "open_clip_model.safetensors": tmp / "oc.safetensors",
    })
    for f in ("a.ckpt", "oc.safetensors"):
        (tmp / f).unlink()


def _run(tmp_path, out: Path, hub_url: str, proxy_url: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SENCLIP_")) and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=hub_url, HF_HOME=str(tmp_path / "hf_home"), SENCLIP_CACHE=str(tmp_path / "cache"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", MPLBACKEND="Agg",
               **{k: proxy_url for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")},
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    exe = Path(sys.executable).parent / "senclip_paper"
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-c", "from senclip.paper import senclip_paper; senclip_paper()"])
    # the demo chain kept short (one figure notebook, no prompt-length runs, few training steps): the online steps are the point
    cmd += ["--preset", "demo", "--out", str(out), "--set", "online=true", "lengths=", "notebooks=table1", "max_steps=2",
            "eval.n_boot=0", "eval.sweep=false"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    return r, json.loads((out / "results.json").read_text())


@pytest.mark.slow  # the demo chain + two full-size ViT-B/32 on 206 images and a 1024 px scene: minutes on 2 cores
def test_demo_online_against_local_hub(tmp_path):
    www = tmp_path / "hub"
    www.mkdir()
    out = tmp_path / "demo"
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("P", (_RefusingProxy,), {"seen": []}))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    url, srv, handler = hub.serve(www)
    try:
        # 1. the weights cannot be downloaded (the hub has neither repository): one clear line, the rest still written
        r, res = _run(tmp_path, out, url, proxy_url)
        status = {s["step"]: (s["status"], s["error"]) for s in res["steps"]}
        assert r.returncode == 1, r.stderr[-2000:]
        assert status["online_weights"][0] == "failed", status
        err = status["online_weights"][1]
        assert err.startswith("UserError: could not download the released weights senclip-vit-b-32-avgpool") and "\n" not in err, err
        assert status["online_eval"][0] == status["online_map"][0] == "blocked", status
        assert all(s == "ran" for k, (s, _) in status.items() if not k.startswith("online_")), status
        assert "Traceback" not in r.stdout + r.stderr, r.stderr[-2000:]
        page = (out / "index.html").read_text()
        assert "could not download the released weights" in page and "table1" in page
        assert "the exception" not in page  # the top stamp names the online section only when it has results
        sec = next(s for s in res["sections"] if s["step"] == "online")
        assert sec["status"] == "failed" and not sec["pngs"]

        # 2. the hub serves the two repositories: the demo steps are unchanged, the online steps run
        _write_hub(www, tmp_path)
        n_before = len(handler.requests_seen)
        r, res = _run(tmp_path, out, url, proxy_url)
    finally:
        srv.shutdown()
        srv.server_close()
        proxy.shutdown()
        proxy.server_close()
    status = {s["step"]: (s["status"], s["error"]) for s in res["steps"]}
    assert r.returncode == 0 and not res["failed"], (status, r.stderr[-3000:])
    assert [s["step"] for s in res["steps"]][-3:] == ["online_weights", "online_eval", "online_map"]
    assert all(status[k][0] == "ran" for k in ("online_weights", "online_eval", "online_map")), status
    assert all(s == "unchanged" for k, (s, _) in status.items() if not k.startswith("online_")), status

    # the requests went to the local hub (the authors' .ckpt, open_clip's safetensors), nothing to any other host
    paths = [p for _, p in handler.requests_seen[n_before:]]
    assert any(p.endswith("/pallavijainpj/SenCLIP/resolve/main/SenCLIP_AvgPool_ViTB32.ckpt") for p in paths), paths
    assert any(p.endswith("/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors")
               for p in paths), paths
    assert not proxy.RequestHandlerClass.seen, proxy.RequestHandlerClass.seen
    assert list((tmp_path / "cache").rglob("SenCLIP_AvgPool_ViTB32.ckpt"))

    # the report: one section, both models' tables and maps, the plain label, never "untrained"
    sec = next(s for s in res["sections"] if s["step"] == "online")
    assert sec["label"] == ONLINE_LABEL and not sec["stamp"]
    assert "real weights on a small sample" in ONLINE_LABEL and "not the paper's protocol" in ONLINE_LABEL
    assert [Path(p).name for p in sec["pngs"]] == [f"{n}_map.png" for n in ONLINE_MODELS]
    assert all((out / p).stat().st_size > 0 and p in res["figures"] for p in sec["pngs"])
    assert any(c.endswith("online_eval/table1.csv") for c in sec["csvs"]), sec["csvs"]
    rows = [r for c in sec["csvs"] if c.endswith("results.csv") for r in res["tables"][c]]
    text = json.dumps(rows).lower()
    assert "senclip-vit-b-32-avgpool" in text or "senclip vit" in text, text[:500]
    assert "clip-vit-b-32" in text or "clip vit" in text, text[:500]
    bad = [r["model"] for r in rows if r.get("untrained") or r.get("not_a_result")]
    assert not bad, bad[:3]  # released weights: neither "untrained" nor "demo weights"
    assert {r["spec"] for r in rows} == set(ONLINE_MODELS), {r["spec"] for r in rows}
    assert {r["n_images"] for r in rows if r["dataset"] == "eurosat"} == {200}
    assert {r["n_images"] for r in rows if r["dataset"] == "bigearthnet19"} == {6}
    assert {r.get("dataset") for r in rows} >= {"eurosat", "bigearthnet19"}, {r.get("dataset") for r in rows}
    page = (out / "index.html").read_text()
    body = page[page.index("<section id='online'>"):]
    body = body[:body.index("</section>")]
    assert "Real weights on a small sample (200 EuroSAT images, 6 BigEarthNet patches): not the paper" in body
    low = body.lower()  # (the results table has an `untrained` column: all False)
    assert not any(w in low for w in ("untrained weights", "demo weights", "not a result")), body[:2000]
    assert body.count("<img ") == 2 and "table1.csv" in body and "results.csv" in body
    assert "the exception" in page  # the report's top stamp names the online section as the exception
