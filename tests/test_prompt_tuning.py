"""Black-box prompt tuning of CLIP (thesis Table 4.1): the injected prompt against OpenCLIP's own text
encoder, the objectives against CLIP's forward pass, the random projection's scale, and a tiny build."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import fake_split_layouts as fake  # noqa: E402
from taskbal.blackbox.prompt_tuning import PromptTuning  # noqa: E402
from taskbal.config import load_table  # noqa: E402
from taskbal.data import image_domains  # noqa: E402
from taskbal.data.datasets import build_splits  # noqa: E402
from workspaces import build_tiny, edit_table, mark_generated, tiny_workspace  # noqa: E402

OFFICE31 = {"amazon": "amazon/images", "dslr": "dslr/images", "webcam": "webcam/images"}


@pytest.fixture(scope="module")
def tuning(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    resources = root / "resources"
    fake.office_tree(resources / "office31/office-31", OFFICE31, per_class=5)
    (resources / "office31/.verified").write_text(json.dumps({"source": "generated for a test"}))
    build_splits("office31", resources / "office31", root / "splits/office31/libmtl.json")
    image_domains.write_splits(root / "split.npz", {"family": "image_domains", "dataset": "office31", "image_size": 32,
                                                    "resources": str(resources),
                                                    "dataset_splits": str(root / "splits")})
    architecture = load_table("thesis_table4_1")["scales"]["tiny"]["clip"]["architecture"]
    torch.manual_seed(0)
    problem = PromptTuning(image_domains.Tasks(root / "split.npz"), model="RN50-quickgelu", weights=None, tokens=4,
                           dim=64, batch_size=4, seed=3, architecture=architecture, device=torch.device("cpu"))
    return problem, root


def test_the_injected_prompt_is_openclips_text_encoder(tuning):
    """With the X tokens' own embeddings as the context, the prompt's class features are OpenCLIP's
    encode_text of "X X X X {class}."; with none, those of the zero-shot template."""
    import open_clip

    problem, _ = tuning
    tokenizer = open_clip.get_tokenizer("RN50-quickgelu")
    classes = ["back pack", "bike", "calculator"]
    with torch.no_grad():
        x_embeddings = problem.clip.token_embedding(tokenizer(["X X X X"]))[0, 1:5]
        expected = F.normalize(problem.clip.encode_text(tokenizer([f"X X X X {c}." for c in classes])), dim=-1)
        torch.testing.assert_close(problem.text_features(x_embeddings), expected, rtol=1e-5, atol=1e-6)
        zero_shot = F.normalize(problem.clip.encode_text(tokenizer([f"a photo of a {c}." for c in classes])), dim=-1)
        torch.testing.assert_close(problem.text_features(None), zero_shot, rtol=1e-5, atol=1e-6)


def test_objectives_are_summed_cross_entropies_of_clips_forward_pass(tuning):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    problem, root = tuning
    tasks = image_domains.Tasks(root / "split.npz")
    v = np.random.default_rng(0).standard_normal((2, 64))
    values = problem.objectives(v, iteration=1)
    batches = problem.batch_indices(1)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    for row in range(2):
        text = problem.text_features(problem.context(v[row]))
        for task, name in enumerate(tasks.task_names):
            images, labels = tasks.arrays("train", name)
            index = batches[task].numpy()
            x = (torch.as_tensor(images[index]).float() / 255 - mean) / std
            with torch.no_grad():
                image = F.normalize(problem.clip.encode_image(x), dim=-1)
                logits = problem.clip.logit_scale.exp() * image @ text.T
            expected = F.cross_entropy(logits, torch.as_tensor(labels[index]), reduction="sum")
            assert values[row, task] == pytest.approx(float(expected), rel=1e-5)
    assert problem.batch_indices(1)[0].tolist() == batches[0].tolist()  # a resumed run draws the same batches


def test_the_projection_has_the_word_embeddings_scale_over_root_d(tuning):
    problem, _ = tuning
    sigma = float(problem.clip.token_embedding.weight.std())
    assert float(problem.projection.std()) == pytest.approx(sigma / 64 ** 0.5, rel=0.02)
    assert problem.projection.shape == (4 * problem.width, 64)


@pytest.mark.slow
def test_tiny_thesis_table4_1(repo, tool_env, tmp_path):
    tiny_workspace(repo, tmp_path)
    edit_table(tmp_path, "thesis_table4_1", seeds=[0], rows=["Zero-shot", "ASMG, d = 256", "BES, d = 256"])
    fake.office_tree(tmp_path / "resources/office31/office-31", OFFICE31, per_class=5)
    fake.office_tree(tmp_path / "resources/office_home/OfficeHomeDataset_10072016",
                     {d: d for d in ("Art", "Clipart", "Product", "Real_World")}, per_class=5)
    for dataset in ("office31", "office_home"):
        mark_generated(tmp_path / f"resources/{dataset}")
    build_tiny(tmp_path, tool_env, "thesis_table4_1")
    table = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table4_1.csv").set_index(["row", "column"])
    for row in ("Zero-shot", "ASMG, d = 256", "BES, d = 256"):
        assert 0 <= table.loc[(row, "o31_avg"), "ours_mean"] <= 100 and table.loc[(row, "oh_avg"), "n"] == 4
    page = (tmp_path / "results/tables/tiny/thesis_table4_1.md").read_text()
    assert "BES step =" in page and "not CLIP's pretrained weights" in page
