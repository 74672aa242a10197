"""`glowrl.io.save_figure`: every plot glowrl writes is written whole or not at all."""

import pytest

from glowrl.io import pyplot, save_figure


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "plots" / "line.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]  # no temporary file left


def test_a_failed_save_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "line.png"
    path.write_bytes(b"previous")
    fig, ax = pyplot().subplots()
    ax.set_title("$\\unknowncommand$")  # mathtext fails when the figure is drawn
    with pytest.raises(ValueError):
        save_figure(fig, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["line.png"]
    assert not pyplot().fignum_exists(fig.number)
