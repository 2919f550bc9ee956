"""Our CLIP towers against two independent implementations on random weights:
OpenAI's model.py (from the clip-anytorch wheel, by file path) and Hugging Face CLIPModel."""

from __future__ import annotations

import pytest
import torch

import claver
from claver.models.factory import load_model

TEXTS = ["a video of dancing", "", "playing guitar!!", "Yo-Yo & tai chi", "x " * 40]


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (non-zero biases, non-unit norms) so parity means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)


@pytest.fixture(scope="module")
def oracle_and_ours(oracle_clip_model, tmp_path_factory):
    torch.manual_seed(0)
    ref = oracle_clip_model.CLIP(
        embed_dim=64, image_resolution=32, vision_layers=2, vision_width=128,
        vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=128,
        transformer_heads=2, transformer_layers=2,
    ).float().eval()
    _perturb(ref, 1)
    path = tmp_path_factory.mktemp("oracle") / "openai_state_dict.pt"
    torch.save(ref.state_dict(), path)
    ours = load_model(path).eval()
    return ref, ours


def test_openai_parity_image_and_text(oracle_and_ours):
    ref, ours = oracle_and_ours
    assert type(ours).__name__ == "CLIP"
    torch.manual_seed(2)
    images = torch.randn(3, 3, 32, 32)
    tokens = claver.tokenize(TEXTS)
    with torch.no_grad():
        ref_img, ref_txt = ref.encode_image(images), ref.encode_text(tokens)
        our_img = ours.encode_image(images, normalize=False)
        our_txt = ours.encode_text(tokens, normalize=False)
        ref_logits, _ = ref(images, tokens)
        our_logits = ours(images, tokens)
    assert (ref_img - our_img).abs().max() <= 1e-5
    assert (ref_txt - our_txt).abs().max() <= 1e-5
    torch.testing.assert_close(our_logits, ref_logits, atol=1e-4, rtol=1e-5)
    # and the features are not degenerate
    assert ref_txt.std(0).mean() > 1e-3 and ref_img.std(0).mean() > 1e-3


def test_openai_parity_fails_when_weights_differ(oracle_and_ours):
    """The comparison above can fail: one changed weight breaks it."""
    ref, ours = oracle_and_ours
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = ours.encode_image(images, normalize=False)
        ours.visual.transformer.resblocks[1].mlp.c_fc.bias[0] += 1.0
        after = ours.encode_image(images, normalize=False)
        ours.visual.transformer.resblocks[1].mlp.c_fc.bias[0] -= 1.0
    assert (before - after).abs().max() > 1e-4


def test_hf_clipmodel_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, vocab_size=49408,
                         hidden_act="quick_gelu", eos_token_id=49407, bos_token_id=49406,
                         pad_token_id=0),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           hidden_act="quick_gelu"),
        projection_dim=48,
    )
    torch.manual_seed(3)
    hf = transformers.CLIPModel(cfg).eval()
    _perturb(hf, 4)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf").eval()
    assert ours.config.vision.heads == 2 and ours.config.text.heads == 2
    images = torch.randn(2, 3, 32, 32)
    tokens = claver.tokenize(TEXTS)
    with torch.no_grad():
        hf_img = hf.get_image_features(pixel_values=images)
        hf_txt = hf.get_text_features(input_ids=tokens)
        hf_img = getattr(hf_img, "pooler_output", hf_img)
        hf_txt = getattr(hf_txt, "pooler_output", hf_txt)
        our_img = ours.encode_image(images, normalize=False)
        our_txt = ours.encode_text(tokens, normalize=False)
    assert our_img.shape == hf_img.shape == (2, 48)
    assert (hf_img - our_img).abs().max() <= 1e-4
    assert (hf_txt - our_txt).abs().max() <= 1e-4
    torch.testing.assert_close(ours.logit_scale, hf.logit_scale)
