"""``braintumor lesson``: output, --json, and clean errors."""

import json


from braintumor.cli import main


def test_lesson_prints_its_finding_and_writes_files(tmp_path, capsys):
    assert main(["lesson", "xor", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "xor: no single-layer perceptron fits XOR" in out
    assert (tmp_path / "xor.png").is_file()
    assert json.loads((tmp_path / "result.json").read_text())["lesson"] == "xor"


def test_lesson_json_output(tmp_path, capsys, mri_tree):
    assert main(["lesson", "convolution", "--quick", "--json", "--data", str(mri_tree), "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["result"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


def test_unknown_lesson_is_refused_with_the_list(capsys):
    assert main(["lesson", "transformers"]) == 2
    assert "invalid choice: 'transformers'" in capsys.readouterr().err


def test_missing_data_folder_is_one_clear_message(tmp_path, capsys):
    code = main(["lesson", "handcrafted", "--quick", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: data folder not found")
    assert "Traceback" not in err


def test_output_folder_that_is_a_file_is_one_clear_message(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["lesson", "xor", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_help_lists_every_lesson(capsys):
    assert main(["lesson", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("xor", "vanishing-gradients", "mri-from-scratch", "--quick", "--data"):
        assert name in out
