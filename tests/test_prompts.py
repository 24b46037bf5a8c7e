"""Prompt lists (lods/prompts.py): the toyworld lists, T3Bench from a local clone, .txt files, prompt_list in train()."""

import pytest
from omegaconf import OmegaConf

from lods.prompts import LISTS, OPEN_MIN_SET, T3BENCH_ENV, category_of, main, prompt_at, prompt_list
from lods.toyworld.grammar import CATEGORIES, consistent_scenes, count_consistent, is_open, parse_caption
from lods.training import train

from .helpers import make_config

T3BENCH_FILES = {"single": "prompt_single.txt", "surroundings": "prompt_surr.txt", "multiple": "prompt_multi.txt"}


@pytest.fixture
def no_t3bench(monkeypatch):
    monkeypatch.delenv(T3BENCH_ENV, raising=False)


@pytest.fixture
def fake_t3bench(tmp_path, monkeypatch):
    """A T3Bench clone's layout (data/prompt_<single|surr|multi>.txt) with three made-up prompts per category."""
    (tmp_path / "data").mkdir()
    for category, name in T3BENCH_FILES.items():
        lines = [f"a {category} thing number {i}" for i in range(3)]
        (tmp_path / "data" / name).write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(T3BENCH_ENV, str(tmp_path))
    return tmp_path


def test_builtin_names_and_categories():
    assert set(LISTS) == {f"{source}_{c}" for source in ("toyworld", "toyworld_open", "t3bench") for c in CATEGORIES}
    for name in LISTS:
        assert category_of(name) == name.rsplit("_", 1)[1]
    assert category_of("my_prompts.txt") is None


@pytest.mark.parametrize("category", CATEGORIES)
def test_toyworld_list_is_100_distinct_captions_of_its_category(category):
    prompts = prompt_list(f"toyworld_{category}")
    assert len(prompts) == 100 and len(set(prompts)) == 100
    assert {parse_caption(p).category for p in prompts} == {category}
    prompts.append("changed by a caller")
    assert prompt_list(f"toyworld_{category}") == prompts[:100]  # fixed across calls, callers get a copy


@pytest.mark.parametrize("category", CATEGORIES)
def test_toyworld_open_list_is_100_distinct_open_captions_of_its_category(category):
    prompts = prompt_list(f"toyworld_open_{category}")
    assert len(prompts) == 100 and len(set(prompts)) == 100
    assert all(is_open(p) and count_consistent(p) >= OPEN_MIN_SET for p in prompts)
    assert {scene.category for scene in consistent_scenes(prompts[0])} == {category}
    # Drawn from the full list's scene stream: its first prompt is a variant of the first full prompt's scene.
    assert parse_caption(prompt_at(f"toyworld_{category}", 0)) in consistent_scenes(prompts[0])


def test_toyworld_lists_are_pinned():
    # The lists are a benchmark: a change of the grammar or of its sampler must not change them silently.
    assert prompt_at("toyworld_single", 0) == "a striped white cylinder with a blue front"
    assert prompt_at("toyworld_multiple", 1) == "an orange cube on top of a purple cube on top of a yellow cube"
    assert prompt_at("toyworld_surroundings", 99) == prompt_list("toyworld_surroundings")[-1]
    assert prompt_at("toyworld_open_single", 0) == "a striped object with a blue front"
    assert prompt_at("toyworld_open_multiple", 1) == "an object on top of a purple object on top of an object"


def test_prompt_at_errors_name_the_bad_value_and_the_allowed_ones():
    with pytest.raises(IndexError, match=r"index 100 out of range for toyworld_single \(0\.\.99\)"):
        prompt_at("toyworld_single", 100)
    with pytest.raises(IndexError, match=r"index -1 out of range"):
        prompt_at("toyworld_single", -1)
    with pytest.raises(ValueError, match="unknown prompt list 'toyworld_singel'") as err:
        prompt_at("toyworld_singel", 0)
    for name in LISTS:
        assert name in str(err.value)
    assert "or a path to a .txt file" in str(err.value)


def test_t3bench_without_a_clone_says_what_to_set(no_t3bench, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"set {T3BENCH_ENV} to a clone of the T3Bench repository") as err:
        prompt_list("t3bench_multiple")
    assert "data/prompt_multi.txt" in str(err.value)
    with pytest.raises(FileNotFoundError, match="data/prompt_surr.txt"):  # a folder without the files
        prompt_list("t3bench_surroundings", root=tmp_path)


def test_t3bench_lists_are_read_from_the_clone(fake_t3bench):
    assert prompt_list("t3bench_surroundings") == [f"a surroundings thing number {i}" for i in range(3)]
    assert prompt_at("t3bench_multiple", 2) == "a multiple thing number 2"
    with pytest.raises(IndexError, match=r"index 3 out of range for t3bench_single \(0\.\.2\)"):
        prompt_at("t3bench_single", 3)


def test_t3bench_root_argument_and_plain_file_names(no_t3bench, tmp_path):
    (tmp_path / "single.txt").write_text("one\ntwo\n")
    assert prompt_list("t3bench_single", root=tmp_path) == ["one", "two"]


def test_a_txt_file_is_a_list(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my prompts\n\na hamburger\n   \n  a roast turkey on a platter  \n# done\n")
    assert prompt_list(str(path)) == ["a hamburger", "a roast turkey on a platter"]
    assert prompt_at(path, 1) == "a roast turkey on a platter" and category_of(path) is None
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        prompt_list(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt' does not exist"):
        prompt_list(tmp_path / "missing.txt")


def test_cli_lists_the_lists_and_numbers_a_list(capsys, fake_t3bench):
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert "toyworld_surroundings" in listing and "100 prompts" in listing and "3 prompts" in listing
    assert main(["toyworld_single"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 and lines[3].split(None, 1) == ["3", prompt_at("toyworld_single", 3)]
    with pytest.raises(SystemExit, match="unknown prompt list 'nope'"):
        main(["nope"])


@pytest.mark.slow
def test_train_takes_its_prompt_from_the_list(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["model=tiny", "logger=none", "trainer.max_steps=2", "image_every=0", "checkpoint_every=2"]
    cfg = make_config([*overrides, "prompt_list=toyworld_multiple", "prompt_index=3"], run_dir=run_dir)
    metrics = train(cfg)
    expected = prompt_at("toyworld_multiple", 3)
    assert OmegaConf.load(run_dir / "config.yaml").prompt == expected
    assert metrics["prompt"] == expected and metrics["steps"] == 2


def test_standard_list_mixes_kinds_and_categories_in_every_round():
    from lods.prompts import STANDARD, STANDARD_PER_KIND

    prompts = prompt_list(STANDARD)
    assert len(prompts) == len(set(prompts)) == 2 * STANDARD_PER_KIND * len(CATEGORIES)
    assert category_of(STANDARD) is None and prompt_list(STANDARD) == prompts  # mixed; fixed
    rounds = len(CATEGORIES) * 2
    for i, prompt in enumerate(prompts):  # round r: full single, surroundings, multiple, then open ones
        kind, category = divmod(i % rounds, len(CATEGORIES))
        source = f"toyworld_{'open_' if kind else ''}{CATEGORIES[category]}"
        assert prompt in prompt_list(source), (i, prompt, source)
        assert is_open(prompt) == bool(kind)
