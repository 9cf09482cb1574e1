"""``python -m server.label``: a folder of images -> CSV of file, digit, confidence."""

from __future__ import annotations

import csv

from server.label import main


def test_labels_a_folder_of_mixed_images(tmp_path, models_dir, png, jpeg, mnist_test_set):
    # Prepare: three digits in different formats and polarities, and one file that is not an image
    images, labels = mnist_test_set
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(images[0], size=200, invert=True))
    (folder / "b.JPG").write_bytes(jpeg(images[1], size=500))
    (folder / "c.png").write_bytes(png(images[2]))
    (folder / "d.png").write_bytes(b"not a picture")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "labels.csv"

    # Execute
    status = main(["--model-dir", str(models_dir), "--images", str(folder), "--out", str(out)])

    # Assert
    assert status == 1  # one file could not be read
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["file"] for row in rows] == ["a.png", "b.JPG", "c.png", "d.png"]
    assert [int(row["digit"]) for row in rows[:3]] == list(labels[:3])
    assert all(0.0 < float(row["confidence"]) <= 1.0 for row in rows[:3])
    assert rows[3]["digit"] == "" and "not a PNG or JPEG" in rows[3]["error"]


def test_clear_errors_for_a_missing_folder_or_model(tmp_path, capsys, png, mnist_test_set):
    out = tmp_path / "labels.csv"
    folder = tmp_path / "photos"
    folder.mkdir()

    assert main(["--model-dir", str(tmp_path), "--images", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err

    assert main(["--model-dir", str(tmp_path), "--images", str(folder), "--out", str(out)]) == 2
    assert "no .png, .jpg or .jpeg files" in capsys.readouterr().err

    (folder / "a.png").write_bytes(png(mnist_test_set[0][0]))
    assert main(["--model-dir", str(tmp_path / "empty"), "--images", str(folder), "--out", str(out)]) == 2
    assert "no published model" in capsys.readouterr().err
    assert not out.exists()
