"""The top level a user discovers: `import senclip` is light (no torch), and every name it offers resolves."""
import subprocess
import sys


def test_import_senclip_does_not_import_torch():
    code = "import sys, senclip; assert 'torch' not in sys.modules and 'open_clip' not in sys.modules; print(senclip.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_every_lazy_name_resolves_and_is_listed():
    import senclip

    for name, module in senclip._LAZY.items():
        value = getattr(senclip, name)
        assert value is getattr(sys.modules[f"senclip.{module}"], name), name
    assert set(senclip._LAZY) <= set(dir(senclip))
    for name in ("load", "list_checkpoints", "get_preset", "build_senclip", "create_model", "zeroshot_classifier"):
        assert name in senclip._LAZY, name
    try:
        senclip.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
