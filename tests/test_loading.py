"""Checkpoint loading: strict keys, local directories, the offline hub cache, the vision tower override."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from videolisa.errors import CheckpointMismatch, ModelUnavailable
from videolisa.model.network import VideoLISAModel
from videolisa.model.tiny import CLIP_DIRNAME


@pytest.fixture
def editable_checkpoint(tiny_checkpoint, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    return target


def _edit_weights(directory, edit):
    state = load_file(directory / "model.safetensors")
    edit(state)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def test_a_missing_key_is_named(editable_checkpoint):
    key = "model.visual_model.mask_decoder.iou_token.weight"
    _edit_weights(editable_checkpoint, lambda s: s.pop(key))
    with pytest.raises(CheckpointMismatch, match="1 missing: " + key.replace(".", r"\.")):
        VideoLISAModel.load(str(editable_checkpoint))


def test_a_misshaped_key_is_named(editable_checkpoint):
    key = "model.mm_projector.2.bias"
    _edit_weights(editable_checkpoint, lambda s: s.__setitem__(key, torch.zeros(7, dtype=torch.bfloat16)))
    with pytest.raises(CheckpointMismatch, match=r"wrong shape: model\.mm_projector\.2\.bias"):
        VideoLISAModel.load(str(editable_checkpoint))


def test_an_unexpected_key_is_named_but_a_vision_tower_copy_is_ignored(editable_checkpoint):
    def edit(state):
        state["model.extra_head.weight"] = torch.zeros(2)
        state["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.zeros(2)

    _edit_weights(editable_checkpoint, edit)
    with pytest.raises(CheckpointMismatch, match=r"1 unexpected: model\.extra_head\.weight"):
        VideoLISAModel.load(str(editable_checkpoint))


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(editable_checkpoint):
    config = json.loads((editable_checkpoint / "config.json").read_text())
    config["vocab_size"] -= 2
    (editable_checkpoint / "config.json").write_text(json.dumps(config))

    def shrink(state):
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            state[key] = state[key][:-2].clone()

    _edit_weights(editable_checkpoint, shrink)
    with pytest.raises(CheckpointMismatch, match=r"model\.embed_tokens\.weight"):
        VideoLISAModel.load(str(editable_checkpoint))


def test_embedding_rows_that_disagree_with_the_config_are_named(editable_checkpoint):
    _edit_weights(editable_checkpoint,
                  lambda s: s.__setitem__("model.embed_tokens.weight", s["model.embed_tokens.weight"][:-1].clone()))
    with pytest.raises(CheckpointMismatch, match=r"model\.embed_tokens\.weight"):
        VideoLISAModel.load(str(editable_checkpoint))


def test_the_feature_selection_of_the_config_is_overridden_to_patch_tokens(editable_checkpoint, tiny_model):
    config_path = editable_checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    config["mm_vision_select_feature"] = "cls_patch"  # the official model sets "patch" whatever is written
    config_path.write_text(json.dumps(config))
    model = VideoLISAModel.load(str(editable_checkpoint))
    pixels = torch.randn(1, 3, 336, 336)
    features = model.clip_features(pixels)
    assert features.shape[1] == (336 // 14) ** 2  # the CLS token is dropped
    torch.testing.assert_close(features, tiny_model.clip_features(pixels))


def test_sharded_safetensors_with_an_index_load(editable_checkpoint, tiny_model):
    state = load_file(editable_checkpoint / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(editable_checkpoint / name), metadata={"format": "pt"})
    (editable_checkpoint / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (editable_checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    model = VideoLISAModel.load(str(editable_checkpoint))
    torch.testing.assert_close(model.sam.mask_decoder.iou_token.weight, tiny_model.sam.mask_decoder.iou_token.weight)


def test_pytorch_bin_weights_load_weights_only(editable_checkpoint, tiny_model):
    state = load_file(editable_checkpoint / "model.safetensors")
    torch.save(state, editable_checkpoint / "pytorch_model.bin")
    (editable_checkpoint / "model.safetensors").unlink()
    model = VideoLISAModel.load(str(editable_checkpoint))
    torch.testing.assert_close(model.projector[0].weight, tiny_model.projector[0].weight)


def test_loading_from_the_offline_hub_cache(tiny_checkpoint, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--videolisa-tiny"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    model = VideoLISAModel.load("someone/videolisa-tiny")
    assert model.info.commit == commit
    assert model.info.vision_directory.endswith(CLIP_DIRNAME)


def test_an_unreachable_hub_repository_says_how_to_provide_it(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailable, match=r"'someone/missing'.*local directory"):
        VideoLISAModel.load("someone/missing")


def test_a_path_that_is_neither_directory_nor_repo_id(tmp_path):
    with pytest.raises(ModelUnavailable, match="neither a directory"):
        VideoLISAModel.load(str(tmp_path / "no" / "such" / "dir"))


def test_vision_tower_override_accepts_a_vision_only_directory(tiny_checkpoint, tmp_path, tiny_model):
    from transformers import CLIPVisionModel

    vision_only = tmp_path / "vision-only"
    CLIPVisionModel.from_pretrained(tiny_checkpoint / CLIP_DIRNAME).save_pretrained(vision_only)
    model = VideoLISAModel.load(str(tiny_checkpoint), vision_tower=str(vision_only))
    pixels = torch.randn(1, 3, 336, 336)
    torch.testing.assert_close(model.clip_features(pixels), tiny_model.clip_features(pixels))


def test_a_vision_tower_of_the_wrong_width_is_refused(tiny_checkpoint, tmp_path):
    from videolisa.model.tiny import TINY_SIZES, write_clip

    wide = write_clip(tmp_path / "wide", dict(TINY_SIZES, clip_hidden=48))
    with pytest.raises(CheckpointMismatch, match="mm_hidden_size"):
        VideoLISAModel.load(str(tiny_checkpoint), vision_tower=str(wide))


def test_the_tiny_writer_is_deterministic(tmp_path):
    from videolisa.model.tiny import write_tiny_checkpoint

    a = load_file(write_tiny_checkpoint(tmp_path / "a") / "model.safetensors")
    b = load_file(write_tiny_checkpoint(tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("model.vision_tower") for k in a)
