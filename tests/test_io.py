"""`glowrl.io.save_figure`: every plot glowrl writes is written whole or not at all."""

import pytest

from glowrl.io import pyplot, reward_trend, save_figure


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


def test_reward_trend_is_the_mean_of_the_first_and_the_last_third_of_the_steps():
    history = [{"reward": r, "step": i} for i, r in enumerate([0.0, 0.5, 0.25, 1.0, 0.0, 1.0, 0.75])]
    history.insert(3, {"loss": 0.1, "step": 3})  # a step without a reward is not a step of the trend
    assert reward_trend(history) == (0.25, 0.875)  # 7 rewards: thirds of 2; (0 + 0.5) / 2 and (1 + 0.75) / 2
    assert reward_trend([{"reward": 0.2}, {"reward": 0.6}]) == (0.2, 0.6)  # fewer than 3: one step each
    assert reward_trend([{"loss": 1.0}]) is None
