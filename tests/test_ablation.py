import json

from evaluation.ablation import differences, main


def _run(root, name, **changes):
    run = root / name
    (run / "model").mkdir(parents=True)
    config = {"width": 0.25, "lam": 0.5, "grid": 10.0, "batch_size": 16, "out": str(run), "seed": 0}
    config.update(changes)
    (run / "config.json").write_text(json.dumps(config))
    (run / "final.json").write_text(json.dumps({"step": 300, "elapsed_s": 180.0}))
    return run


def _row(name, model, t, auc):
    return {"name": name, "model": model, "temperature": t, "auc": auc, "auc_rebalanced": auc - 0.2,
            "psnr": 22.0, "colorfulness": 30.0, "truth_colorfulness": 36.8}


def test_differences_ignore_bookkeeping():
    base = {"width": 0.25, "lam": 0.5, "out": "a", "val_every": 10}
    assert differences({"width": 0.25, "lam": 0.5, "out": "b", "val_every": 5}, base) == "base"
    assert differences({"width": 0.5, "lam": 1.0, "out": "b"}, base) == "lam=1.0, width=0.5"


def test_table_labels_rows_by_config_difference(tmp_path, capsys):
    base = _run(tmp_path, "abl-base")
    lam = _run(tmp_path, "abl-lam1", lam=1.0)
    ev = tmp_path / "eval"
    ev.mkdir()
    table = [_row("gray (ab = 0)", None, None, 0.89), _row("b", str(base / "model"), 0.38, 0.88),
             _row("l", str(lam / "model"), 0.38, 0.90)]
    (ev / "results.json").write_text(json.dumps({"settings": {"photos": 45, "prior": "the set's prior"},
                                                 "table": table}))
    out = tmp_path / "ablation.md"
    assert main([str(lam), str(base), "--base", str(base), "--evaluation", str(ev), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[2].startswith("| gray (ab = 0) |") and "0.890" in lines[2]
    assert lines[3].startswith("| abl-base | base | 300 x 16 | 3.0 | 0.38 | 0.880 | 0.680 |")
    assert lines[4].startswith("| abl-lam1 | lam=1.0 |") and "0.900" in lines[4]
    assert "45 held-out photos" in out.read_text()


def test_missing_model_in_evaluation_is_one_line(tmp_path, capsys):
    base = _run(tmp_path, "abl-base")
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"settings": {"photos": 1, "prior": "p"}, "table": []}))
    assert main([str(base), "--base", str(base), "--evaluation", str(ev), "--out", str(tmp_path / "a.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in" in err[0]
