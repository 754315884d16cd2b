"""Batched on-device views: equal to torchvision's per-image ops on the same parameters, and a pure function of
(seed, epoch, index, view)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from sslgraph.config import AugConfig
from sslgraph.data import batch_aug
from sslgraph.data.batch_aug import (BatchAugment, ViewRecipe, adjust_hue, apply_view, draw_params, gaussian_blur,
                                     resample_matrix, resized_crop, sample_keys, uniform, uniforms,
                                     view_recipes)


def _images(n: int = 24, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)


def _reference(image: torch.Tensor, params, b: int, recipe: ViewRecipe) -> torch.Tensor:
    """torchvision's per-image ops, in the batched path's order, with sample ``b``'s parameters."""
    left, top, w, h = (int(v) for v in params.boxes[b])
    out = TF.resized_crop(image, top, left, h, w, [recipe.size, recipe.size], antialias=True)
    if params.flip[b]:
        out = TF.horizontal_flip(out)
    out = out.float() / 255
    if params.jitter[b]:
        out = TF.adjust_brightness(out, float(params.brightness[b]))
        out = TF.adjust_contrast(out, float(params.contrast[b]))
        out = TF.adjust_saturation(out, float(params.saturation[b]))
        out = TF.adjust_hue(out, float(params.hue[b]))
    if params.grayscale[b]:
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    if params.sigma[b] > 0:
        out = TF.gaussian_blur(out, [recipe.blur_kernel] * 2, [float(params.sigma[b])] * 2)
    if params.solarize[b]:
        out = TF.solarize(out, 128 / 255)
    return out


@pytest.mark.parametrize("size", [32, 24])
def test_views_match_torchvision_on_the_same_parameters(size: int) -> None:
    images = _images()
    recipe = ViewRecipe(size=size, scale=(0.2, 1.0), saturation=0.4, blur_p=0.5, blur_sigma=(0.1, 1.5),
                        blur_kernel=3, solarize_p=0.3)
    params = draw_params(recipe, sample_keys(torch.arange(len(images)), seed=3, epoch=1, view=0), height=32, width=32)
    # Every step must actually be exercised by this batch.
    assert params.flip.any() and params.jitter.any() and params.grayscale.any()
    assert (params.sigma > 0).any() and params.solarize.any()
    out = apply_view(images.float() / 255, params, recipe)
    for b in range(len(images)):
        ref = _reference(images[b], params, b, recipe)
        # The reference rounds the crop to uint8 before the colour steps; nothing else differs.
        assert (out[b] - ref).abs().max() < 0.02, b


def test_hue_equals_torchvision_on_float_images() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(16, 3, 8, 8, generator=generator)
    images[0] = 0.5  # grey: no hue at all
    images[1] = 0.0  # black
    images[2, :, :4] = images[2, :1, :4]  # grey pixels inside a coloured image
    images[3, 1] = images[3, 0]  # ties between the maximum channels
    images[4] = images[4].round()  # saturated primaries and secondaries
    shifts = torch.rand(16, generator=generator) - 0.5
    shifts[5] = 0.0
    shifts[6] = 0.5
    out = adjust_hue(images, shifts)
    for b in range(len(images)):
        torch.testing.assert_close(out[b], TF.adjust_hue(images[b], float(shifts[b])), rtol=0, atol=1e-5)


def test_crop_equals_torchvision_resized_crop_up_to_rounding() -> None:
    images = _images(4)
    boxes = torch.tensor([[0, 0, 32, 32], [4, 6, 20, 16], [10, 3, 7, 29], [31, 31, 1, 1]], dtype=torch.float32)
    flip = torch.tensor([False, True, False, True])
    out = resized_crop(images.float(), boxes, flip, 32)
    for b, (left, top, w, h) in enumerate(boxes.long().tolist()):
        ref = TF.resized_crop(images[b], top, left, h, w, [32, 32], antialias=True)
        if flip[b]:
            ref = TF.horizontal_flip(ref)
        assert (out[b] - ref.float()).abs().max() <= 1.0
    assert torch.equal(out[0], images[0].float())  # the whole image at its own size is the identity


def test_downsampling_is_antialiased_like_torchvision() -> None:
    image = _images(1, 64)
    out = resized_crop(image.float(), torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([False]), 16)
    ref = TF.resize(image[0], [16, 16], antialias=True).float()
    assert (out[0] - ref).abs().max() <= 1.0


def test_resample_rows_are_convex_weights_inside_the_box() -> None:
    m = resample_matrix(torch.tensor([3.0]), torch.tensor([5.0]), in_size=16, out_size=8)
    assert torch.allclose(m.sum(dim=2), torch.ones(1, 8))
    assert (m[0, :, :3] == 0).all() and (m[0, :, 8:] == 0).all() and (m >= 0).all()


def test_blur_with_sigma_zero_is_identity_and_matches_per_sample_kernels() -> None:
    x = _images(3).float() / 255
    sigma = torch.tensor([0.0, 0.7, 1.3])
    out = gaussian_blur(x, sigma, 5)
    assert torch.equal(out[0], x[0])
    for b in (1, 2):
        assert torch.allclose(out[b], TF.gaussian_blur(x[b], [5, 5], [float(sigma[b])] * 2), atol=1e-5)


def test_a_view_depends_only_on_seed_epoch_index_and_view() -> None:
    images = _images(16)
    aug = BatchAugment(view_recipes(AugConfig(), image_size=32), mean=[0.5] * 3, std=[0.25] * 3, seed=7)
    indices = torch.arange(100, 116)
    v1, v2 = aug(images, indices, epoch=2)
    # Another batch composition and order: the same (index, image) pairs give the same views.
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1))[:9]
    w1, w2 = aug(images[order], indices[order], epoch=2)
    assert torch.equal(w1, v1[order]) and torch.equal(w2, v2[order])
    # Another epoch, seed or view changes them.
    assert not torch.equal(aug(images, indices, epoch=3)[0], v1)
    other = BatchAugment(view_recipes(AugConfig(), image_size=32), mean=[0.5] * 3, std=[0.25] * 3, seed=8)
    assert not torch.equal(other(images, indices, epoch=2)[0], v1)
    assert not torch.equal(v1, v2)


def test_partner_sources_keep_the_anchor_key() -> None:
    images, partners = _images(8), _images(8).flip(0)
    aug = BatchAugment([ViewRecipe(size=32), ViewRecipe(size=32)], mean=[0.0] * 3, std=[1.0] * 3, seed=0)
    indices = torch.arange(8)
    plain = aug(partners, indices, epoch=0)[1]
    mixed = aug(images, indices, epoch=0, sources=[None, partners])
    assert torch.equal(mixed[1], plain)  # view 2 cut from the partner with the anchor's parameters
    assert torch.equal(mixed[0], aug(images, indices, epoch=0)[0])


def test_uniform_stream_is_uniform_and_slots_are_independent() -> None:
    keys = sample_keys(torch.arange(20_000), seed=0, epoch=0, view=0)
    u, v = uniform(keys, 0), uniform(keys, 1)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.std()) - (1 / 12) ** 0.5) < 0.01
    assert abs(float(torch.corrcoef(torch.stack([u, v]))[0, 1])) < 0.03
    # Neighbouring indices are not correlated either.
    assert abs(float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])) < 0.03


def _hash_in_python(x: int) -> int:
    """The 32-bit mix written out on Python integers (the reference for the tensor version)."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def test_all_slots_at_once_equal_the_hash_written_out_per_key_and_slot() -> None:
    """``uniforms`` draws every slot in one ``[B, S]`` pass; each entry must be the scalar hash of its own key and
    slot, and the one-slot ``uniform`` its column."""
    keys = sample_keys(torch.tensor([0, 1, 7, 49_999]), seed=5, epoch=3, view=1)
    table = uniforms(keys)
    assert table.shape == (4, 14) and table.dtype == torch.float32
    for row, key in enumerate(keys.tolist()):
        for slot in range(14):
            expected = (_hash_in_python(key ^ (((slot + 1) * 0x27D4EB2D) & 0xFFFFFFFF)) >> 8) / float(1 << 24)
            assert float(table[row, slot]) == expected
    assert torch.equal(uniform(keys, 9), table[:, 9])
    assert torch.equal(uniforms(keys, slots=[9, 2]), table[:, [9, 2]])


def test_crop_scale_and_ratio_follow_the_recipe() -> None:
    recipe = ViewRecipe(size=32, scale=(0.25, 0.5), ratio=(1.0, 1.0))
    params = draw_params(recipe, sample_keys(torch.arange(500), seed=0, epoch=0, view=0), height=64, width=64)
    left, top, w, h = params.boxes.unbind(1)
    area = w * h / 64**2
    assert float(area.min()) >= 0.22 and float(area.max()) <= 0.53
    assert ((left >= 0) & (top >= 0) & (left + w <= 64) & (top + h <= 64)).all()


def test_bad_input_names_the_shape() -> None:
    aug = BatchAugment([ViewRecipe(size=8)], mean=[0.0] * 3, std=[1.0] * 3, seed=0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.arange(2), epoch=0)
    with pytest.raises(ValueError, match="at least one"):
        BatchAugment([], mean=[0.0] * 3, std=[1.0] * 3, seed=0)


def test_local_crops_follow_the_two_global_views_at_their_own_size_and_scale() -> None:
    aug = AugConfig(local_crops=3, local_crop_size=16, local_crop_scale_min=0.05, local_crop_scale_max=0.3)
    recipes = view_recipes(aug, image_size=32)
    assert [r.size for r in recipes] == [32, 32, 16, 16, 16]
    assert all(r.scale == (0.05, 0.3) and r.solarize_p == 0.0 and r.blur_p == 0.5 for r in recipes[2:])
    assert view_recipes(AugConfig(local_crops=1), image_size=224)[2].size == 96  # DINO's 96 of 224 by default
    batch = BatchAugment(recipes, mean=[0.5] * 3, std=[0.25] * 3, seed=0)
    images, indices = _images(8), torch.arange(8)
    views = batch(images, indices, epoch=0, sources=[None, None, None, None, None])
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 3
    params = batch.params(3, indices, epoch=0, height=32, width=32)
    area = params.boxes[:, 2] * params.boxes[:, 3] / 32**2
    assert bool((area <= 0.3 + 0.05).all())  # small boxes (integer rounding allows a little more)
    # each local crop equals torchvision's ops on its own parameters, like the global views
    for b in range(3):
        torch.testing.assert_close(views[3][b] * 0.25 + 0.5, _reference(images[b], params, b, recipes[3]),
                                   atol=2e-2, rtol=0)


def test_compiled_colour_steps_give_the_eager_views() -> None:
    """``compile=True`` (``aug.compile``): the compiled views equal the eager ones, for two views made in one
    compiled graph (no blur: draw, crop, colour and normalisation) and one blurred and solarised after its
    compiled colour steps; written channels-last, as the trainer asks for ResNets."""
    plain = ViewRecipe(size=16, blur_p=0.0, jitter_p=0.8, grayscale_p=0.5)  # two views made as one batch
    recipes = [plain, plain,
               ViewRecipe(size=16, blur_p=1.0, blur_sigma=(0.2, 1.0), solarize_p=0.5, grayscale_p=0.5)]
    eager = BatchAugment(recipes, mean=[0.5] * 3, std=[0.25] * 3, seed=3)
    fused = BatchAugment(recipes, mean=[0.5] * 3, std=[0.25] * 3, seed=3, compile=True, channels_last=True)
    images, indices = _images(32, size=20), torch.arange(40, 72)
    for epoch in (0, 1):
        for a, b in zip(eager(images, indices, epoch=epoch), fused(images, indices, epoch=epoch)):
            assert torch.allclose(a, b, atol=1e-5)
            assert b.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous(
                memory_format=torch.channels_last)
    # The draw is the same random stream, so the crops, flips and jitter factors are equal exactly.
    p, q = eager.params(1, indices, epoch=1, height=20, width=20), fused.params(1, indices, epoch=1, height=20,
                                                                                width=20)
    assert all(torch.equal(getattr(p, f), getattr(q, f)) for f in ("boxes", "flip", "jitter", "hue", "grayscale"))


def test_a_missing_cpp_compiler_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert batch_aug.missing_cpp_compiler("cpu") is None  # this machine has one
    monkeypatch.setattr(batch_aug.shutil, "which", lambda name: None)
    reason = batch_aug.missing_cpp_compiler("cpu")
    assert reason is not None and "C++ compiler" in reason and "\n" not in reason
    assert batch_aug.missing_cpp_compiler("cuda") is None  # Triton, no C++ compiler needed


def test_views_of_one_recipe_made_together_equal_views_made_one_by_one() -> None:
    """Consecutive views of one recipe are made as one batch (:func:`view_groups`): every view equals the one
    made alone, bit for bit, partner sources included, and groups break where the recipe changes."""
    glob, local = ViewRecipe(size=16, grayscale_p=0.5), ViewRecipe(size=8, scale=(0.05, 0.4))
    recipes = [glob, glob, local, local, local]
    assert [views for _, views in batch_aug.view_groups(recipes)] == [[0, 1], [2, 3, 4]]
    together = BatchAugment(recipes, mean=[0.5] * 3, std=[0.25] * 3, seed=5)
    images, indices = _images(6, size=20), torch.arange(100, 106)
    partners = _images(6, size=20).flip(0)
    views = together(images, indices, epoch=2, sources=[None, partners, None, None, None])
    for v, recipe in enumerate(recipes):
        keys = batch_aug.sample_keys(indices, seed=5, epoch=2, view=v)
        params = batch_aug.draw_params(recipe, keys, height=20, width=20)
        source = batch_aug._to_unit_float(partners if v == 1 else images)
        expected = together.normalize(batch_aug.apply_view(source, params, recipe))
        assert torch.equal(views[v], expected), v


def test_the_views_of_one_group_join_without_a_copy_in_either_layout() -> None:
    """The step joins the two global views of one group for a single forward (:func:`join_views`): no copy where
    they are consecutive chunks of one tensor, a concatenation otherwise; the values as ``torch.cat``'s."""
    recipes = [ViewRecipe(size=16), ViewRecipe(size=16), ViewRecipe(size=8)]
    images, indices = _images(6, size=20), torch.arange(6)
    plain = BatchAugment(recipes, mean=[0.5] * 3, std=[0.25] * 3, seed=1)
    last = BatchAugment(recipes, mean=[0.5] * 3, std=[0.25] * 3, seed=1, channels_last=True)
    for views, layout in ((plain(images, indices, epoch=0), torch.contiguous_format),
                          (last(images, indices, epoch=0), torch.channels_last)):
        joined = batch_aug.join_views(views[:2])
        assert joined.data_ptr() == views[0].data_ptr() and joined.is_contiguous(memory_format=layout)
        assert torch.equal(joined, torch.cat(views[:2]))
    views = plain(images, indices, epoch=0)
    assert all(torch.equal(a, b) for a, b in zip(views, last(images, indices, epoch=0)))
    apart = [views[1], views[0]]  # the same chunks out of order: copied
    joined = batch_aug.join_views(apart)
    assert joined.data_ptr() != views[1].data_ptr() and torch.equal(joined, torch.cat(apart))
    assert torch.equal(batch_aug.join_views([views[0], views[0].clone()]), torch.cat([views[0], views[0]]))
