"""One seed rule: outputs of a call count up from its seed; every other seed is derived, and none collide."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc import seeds
from aigc.orchestration.batch import Manifest, derive_seed, variant_seed
from aigc.orchestration.workflows import Step, step_seed
from aigc.scoring.loop import prompt_seed, round_seeds


def test_derived_seeds_are_stable_and_exact_in_json():
    assert seeds.derive(7, "step", "story", "piece", 0) == seeds.derive(7, "step", "story", "piece", 0)
    assert seeds.derive(7, "step", "story", "piece", 0) != seeds.derive(8, "step", "story", "piece", 0)
    assert all(0 <= seeds.derive(s, "x") < 2**52 for s in range(1000))  # below 2**53: exact as a JS number


def test_a_big_plan_never_gives_two_places_the_same_seed():
    """A 200-step workflow, 30 fan-out pieces each, every call a best_of=30 search over 4 rounds, plus a batch of
    2,000 rows x 5 variants: 730,000 seeds, all different. (The old scheme put workflow pieces 100 seeds apart
    while one such search spans 120, so pieces shared seeds.)"""
    used: list[int] = []
    for step in range(200):
        for piece in range(30):
            base = step_seed(Step(f"step{step}", "image", "x"), run_seed=1, piece=piece)
            for attempt in range(1, 5):
                used += round_seeds(base, attempt=attempt, count=30)
    used += [derive_seed(1, row, variant) for row in range(2000) for variant in range(5)]
    assert len(used) == 730_000 and len(set(used)) == len(used)


def test_rounds_prompts_and_variants_get_their_own_seeds():
    first = round_seeds(prompt_seed(3, 0), attempt=1, count=5)
    assert first == [3, 4, 5, 6, 7]  # each candidate's seed reproduces it alone with generate(seed=...)
    later = round_seeds(3, attempt=2, count=5) + round_seeds(prompt_seed(3, 1), attempt=1, count=5)
    assert not set(first) & set(later) and len(set(later)) == 10
    assert variant_seed(40, 0) == 40 and len({variant_seed(40, v) for v in range(100)}) == 100
    step = Step("poster", "image", "x", seed=9)
    assert step_seed(step, 0, 0) == 9 and step_seed(step, 0, 1) != 10  # a step's own seed is its first call's


def test_a_workflows_fan_out_pieces_do_not_share_seeds(tiny_gpt2, tiny_dcgan, manager):
    produced = aigc.chain(
        aigc.Step("ideas", "text", "Ideas about {topic}", model=tiny_gpt2, n=3, params={"max_new_tokens": 4}),
        aigc.Step("faces", "image", "{ideas}", backend="gan", model=tiny_dcgan, n=2),
        topic="the sea",
        seed=3,
        manager=manager,
    )
    faces = [a.seed for a in produced["faces"]]
    assert len(faces) == 6 and len(set(faces)) == 6
    assert not set(faces) & {a.seed for a in produced["ideas"]}


def test_no_seed_means_a_fresh_one_for_runs_and_batches_too_and_a_resume_keeps_it(tiny_gpt2, tiny_dcgan, tmp_path):
    """One rule for generate, run and batch: without a seed each new call draws one (recorded), and the same
    command on the same directory resumes with the seed that directory recorded."""
    (tmp_path / "p.txt").write_text("a face\nanother face\n")
    first = aigc.batch(tmp_path / "p.txt", tmp_path / "b1", kind="image", backend="gan", model=tiny_dcgan, n=2)
    again = aigc.batch(tmp_path / "p.txt", tmp_path / "b1", kind="image", backend="gan", model=tiny_dcgan, n=2)
    aigc.batch(tmp_path / "p.txt", tmp_path / "b2", kind="image", backend="gan", model=tiny_dcgan, n=2)
    assert (first.made, again.made, again.skipped, again.changed) == (4, 0, 4, [])  # resumed, with the same seed
    recorded = [json.loads((tmp_path / b / "batch.json").read_text())["seed"] for b in ("b1", "b2")]
    seeds_of = [{r["seed"] for r in Manifest(tmp_path / b).records()} for b in ("b1", "b2")]
    assert recorded[0] != recorded[1] and not seeds_of[0] & seeds_of[1]  # two new batches: two fresh seeds
    assert seeds_of[0] == {derive_seed(recorded[0], row, v) for row in (1, 2) for v in range(2)}

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"steps:\n  - name: line\n    kind: text\n    model: {tiny_gpt2}\n    prompt: The sea\n"
        "    params: {max_new_tokens: 4}\n"
    )
    runs = [json.loads(aigc.run(recipe, tmp_path / name).read_text()) for name in ("r1", "r1", "r2")]
    assert runs[0] == runs[1]  # the same directory again: the finished run, its seed kept
    assert runs[0]["pipeline"]["seed"] != runs[2]["pipeline"]["seed"]
    assert len({aigc.run(recipe)["line"][0].seed for _ in range(2)}) == 2  # no directory: a fresh seed each time


def test_an_unfinished_run_resumes_with_the_seed_it_recorded(tiny_gpt2, tmp_path):
    from aigc.orchestration.recipes import load_recipe, recorded_seed, run_to_dir

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"steps:\n  - name: line\n    kind: text\n    model: {tiny_gpt2}\n    prompt: The sea\n"
        f"    params: {{max_new_tokens: 4}}\n  - name: more\n    kind: text\n    model: {tiny_gpt2}\n"
        "    prompt: '{line}'\n    params: {max_new_tokens: 4}\n"
    )

    class Stopped(Exception):
        pass

    def stop(assets, out):  # the run stops right after its first call is on disk, as a kill there would
        raise Stopped

    with pytest.raises(Stopped):
        run_to_dir(load_recipe(recipe), {}, tmp_path / "run", on_assets=stop)
    seed, first = recorded_seed(tmp_path / "run"), (tmp_path / "run" / "line-0.txt").read_bytes()
    done = json.loads(run_to_dir(load_recipe(recipe), {}, tmp_path / "run").read_text())
    assert isinstance(seed, int) and done["pipeline"]["seed"] == seed
    assert (tmp_path / "run" / "line-0.txt").read_bytes() == first and (tmp_path / "run" / "more-0.txt").exists()


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "7", True])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(aigc.ConfigError, match="seed"):
        seeds.expand(seed, 1)
