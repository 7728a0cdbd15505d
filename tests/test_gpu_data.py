"""The GPU-resident pipeline, run on CPU tensors: shapes, ranges, what each augmentation does, determinism,
resume and sharding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cifar_utils import gpu_data
from cifar_utils.config import Config, progressive_schedule, replace
from cifar_utils.data import ImageSet, drops_last_batch, make_splits
from cifar_utils.errors import ConfigError
from cifar_utils.experiment import describe_progressive
from cifar_utils.gpu_data import GpuEvalLoader, GpuTrainLoader, make_gpu_loaders
from cifar_utils.preprocessing import AUGMENTATIONS

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def numbered_images(n: int = 40, seed: int = 0) -> ImageSet:
    """Random (so never mirror-symmetric) uint8 images whose label is their index, to identify them."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n), [str(i) for i in range(n)])


def normalised(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def loader(imageset: ImageSet, batch_size: int = 16, **kwargs) -> GpuTrainLoader:
    return GpuTrainLoader(imageset, MEAN, STD, batch_size, "cpu", **kwargs)


def epoch_batches(train_loader: GpuTrainLoader, epoch: int, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    train_loader.set_epoch(epoch, skip)
    return list(train_loader)


# ------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_batches_have_the_right_shapes_types_and_value_range(augmentation):
    data = numbered_images(40)
    train = loader(data, augmentation=augmentation)
    batches = epoch_batches(train, 0)
    assert len(train) == len(batches) == math.ceil(40 / 16)
    low = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    high = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    for images, labels in batches:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == torch.int64 and len(labels) == len(images)
        assert torch.isfinite(images).all()
        assert (images >= low - 1e-5).all() and (images <= high + 1e-5).all()
    labels = torch.cat([b[1] for b in batches])
    assert sorted(labels.tolist()) == list(range(40))  # every image exactly once, shuffled
    assert labels.tolist() != list(range(40))


def test_a_last_training_batch_of_one_image_is_left_out():
    batches = epoch_batches(loader(numbered_images(33), batch_size=16), 0)
    assert [len(labels) for _, labels in batches] == [16, 16]
    assert [len(labels) for _, labels in epoch_batches(loader(numbered_images(1), batch_size=16), 0)] == [1]


def test_drop_last_keeps_one_batch_shape_unless_a_partial_batch_is_all_there_is():
    assert [len(y) for _, y in epoch_batches(loader(numbered_images(40), 16, drop_last=True), 0)] == [16, 16]
    assert [len(y) for _, y in epoch_batches(loader(numbered_images(40), 16), 0)] == [16, 16, 8]
    assert [len(y) for _, y in epoch_batches(loader(numbered_images(10), 16, drop_last=True), 0)] == [10]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("images", [1, 10, 16, 17, 33, 40])
def test_both_pipelines_train_on_as_many_batches(images, drop_last):
    torchvision = torch.utils.data.DataLoader(range(images), batch_size=16,
                                              drop_last=drops_last_batch(drop_last, images, 16))
    assert loader(numbered_images(images), 16, drop_last=drop_last).batches_per_epoch == len(torchvision)


def test_no_augmentation_gives_the_normalised_images():
    data = numbered_images(20)
    for images, labels in epoch_batches(loader(data, augmentation="none"), 0):
        torch.testing.assert_close(images, normalised(data.images[labels]))


def test_crop_flip_outputs_are_shifted_and_possibly_mirrored_originals():
    data = numbered_images(12)
    images, labels = epoch_batches(loader(data, batch_size=12, augmentation="crop_flip", crop_padding=2), 0)[0]
    found_shift, found_flip = set(), set()
    for out, label in zip(images, labels):
        source = data.images[label].float().unsqueeze(0) / 255
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                moved = F.pad(source, (2, 2, 2, 2))[..., 2 - dy:34 - dy, 2 - dx:34 - dx]  # black fill, as torchvision
                expected = (moved - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
                for flip in (False, True):
                    candidate = expected.flip(-1) if flip else expected
                    if torch.allclose(out, candidate[0], atol=1e-5):
                        matches.append((dy, dx, flip))
        assert len(matches) == 1, f"image {label} is not one shift/flip of its source"
        found_shift.add(matches[0][:2])
        found_flip.add(matches[0][2])
    assert len(found_shift) > 3 and found_flip == {False, True}


def test_same_seed_same_batches_and_other_seeds_or_epochs_differ():
    data = numbered_images(40)
    first = epoch_batches(loader(data, seed=7, augmentation="affine_jitter"), 2)
    again = epoch_batches(loader(data, seed=7, augmentation="affine_jitter"), 2)
    for (a, la), (b, lb) in zip(first, again):
        assert torch.equal(a, b) and torch.equal(la, lb)
    other_seed = epoch_batches(loader(data, seed=8, augmentation="affine_jitter"), 2)
    other_epoch = epoch_batches(loader(data, seed=7, augmentation="affine_jitter"), 3)
    assert not torch.equal(first[0][1], other_seed[0][1])
    assert not torch.equal(first[0][1], other_epoch[0][1])


def test_resume_skips_to_exactly_the_batches_of_an_uninterrupted_epoch():
    data = numbered_images(50)
    full = epoch_batches(loader(data, batch_size=8, augmentation="crop_flip", cutout=6, seed=3), 4)
    resumed_loader = loader(data, batch_size=8, augmentation="crop_flip", cutout=6, seed=3)
    resumed_loader.set_epoch(4, skip_batches=3)
    assert len(resumed_loader) == len(full) - 3
    resumed = list(resumed_loader)
    assert len(resumed) == len(full) - 3
    for (a, la), (b, lb) in zip(full[3:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert resumed_loader.epoch == 5 and len(resumed_loader) == len(full)  # on to the next epoch, no skip


def test_a_full_pass_moves_on_to_the_next_epoch():
    data = numbered_images(20)
    train = loader(data, seed=1)
    list(train)
    after_one_pass = [b[1] for b in train]
    assert [torch.equal(a, b[1]) for a, b in zip(after_one_pass, epoch_batches(loader(data, seed=1), 1))] == \
        [True] * len(after_one_pass)


def test_loader_leaves_the_global_random_stream_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    epoch_batches(loader(numbered_images(20), augmentation="resized_crop_flip", alternating_flip=True, cutout=4), 0)
    assert torch.equal(before, torch.get_rng_state())


def flip_states(train_loader: GpuTrainLoader, data: ImageSet, epoch: int) -> dict[int, bool]:
    """Image index -> mirrored in this epoch (crop_padding=0 leaves only the flip)."""
    states = {}
    for images, labels in epoch_batches(train_loader, epoch):
        for out, label in zip(images, labels.tolist()):
            original = normalised(data.images[label:label + 1])[0]
            if torch.allclose(out, original):
                states[label] = False
            else:
                torch.testing.assert_close(out, original.flip(-1))
                states[label] = True
    return states


def test_alternating_flip_mirrors_each_image_on_every_other_epoch():
    data = numbered_images(30)
    train = loader(data, augmentation="crop_flip", crop_padding=0, alternating_flip=True)
    epochs = [flip_states(train, data, e) for e in range(3)]
    assert 0 < sum(epochs[0].values()) < 30  # the starting side is random per image
    for i in range(30):
        assert epochs[1][i] != epochs[0][i] and epochs[2][i] == epochs[0][i]


def test_random_flip_mirrors_about_half_independently_each_epoch():
    data = numbered_images(60)
    train = loader(data, augmentation="crop_flip", crop_padding=0)
    first, second = flip_states(train, data, 0), flip_states(train, data, 1)
    assert 15 < sum(first.values()) < 45
    assert any(first[i] == second[i] for i in range(60)) and any(first[i] != second[i] for i in range(60))


def test_ranks_take_disjoint_shares_that_cover_the_epoch():
    data = numbered_images(40)
    shares = [torch.cat([b[1] for b in epoch_batches(loader(data, batch_size=5, rank=r, world_size=3, seed=2), 6)])
              for r in range(3)]
    assert [len(s) for s in shares] == [14, 14, 14]  # ceil(40 / 3), padded like DistributedSampler
    everything = torch.cat(shares)
    assert set(everything.tolist()) == set(range(40))
    assert len(everything) - len(set(everything.tolist())) == 2  # only the padding repeats


def test_eval_loader_is_in_order_unaugmented_and_shards_with_padding():
    data = numbered_images(10)
    single = GpuEvalLoader(data, MEAN, STD, 4, "cpu")
    images = torch.cat([b[0] for b in single])
    torch.testing.assert_close(images, normalised(data.images))
    shares = [torch.cat([b[1] for b in GpuEvalLoader(data, MEAN, STD, 4, "cpu", rank=r, world_size=4)])
              for r in range(4)]
    assert [s.tolist() for s in shares] == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]


def test_channels_last_layout_when_asked():
    images, _ = next(iter(loader(numbered_images(8), channels_last=True)))
    assert images.is_contiguous(memory_format=torch.channels_last)
    evaluated, _ = next(iter(GpuEvalLoader(numbered_images(8), MEAN, STD, 4, "cpu", channels_last=True)))
    assert evaluated.is_contiguous(memory_format=torch.channels_last)


def test_bad_settings_get_one_clear_error():
    data = numbered_images(8)
    with pytest.raises(ConfigError, match="no augmentation 'blur'"):
        loader(data, augmentation="blur")
    with pytest.raises(ConfigError, match="alternating_flip"):
        loader(data, augmentation="none", alternating_flip=True)
    with pytest.raises(ConfigError, match="cannot skip 5 batches"):
        loader(data, batch_size=4).set_epoch(0, 5)
    with pytest.raises(ConfigError, match="needs pipeline='gpu'"):
        Config(alternating_flip=True).validate()
    with pytest.raises(ConfigError, match="needs pipeline='gpu'"):
        Config(cutout=8).validate()
    with pytest.raises(ConfigError, match="needs pipeline='gpu'"):
        Config(crop_fill="reflect").validate()
    with pytest.raises(ConfigError, match="crop_fill='wrap' is not valid; choose one of zeros, reflect"):
        Config(pipeline="gpu", crop_fill="wrap").validate()
    with pytest.raises(ConfigError, match="crop_fill='wrap' is not valid"):
        loader(data, crop_fill="wrap")
    with pytest.raises(ConfigError, match="needs pipeline='gpu'"):
        Config(progressive_start=16, model="cpu_net").validate()
    for side in (8, 12, 32):
        with pytest.raises(ConfigError, match=f"progressive_start={side} is invalid: it must be 0 .off., 16 or 24"):
            Config(pipeline="gpu", progressive_start=side, model="cpu_net").validate()
    with pytest.raises(ConfigError, match="progressive_start=16 is invalid: it needs a network that takes smaller "
                                          "images .cpu_net, fast_net, fast_best_net.; model='seed004_net' does not"):
        Config(pipeline="gpu", progressive_start=16, model="seed004_net").validate()
    with pytest.raises(ConfigError, match="progressive_fraction=1.0 is invalid"):
        Config(pipeline="gpu", progressive_start=16, progressive_fraction=1.0, model="cpu_net").validate()
    with pytest.raises(ConfigError, match=r"progressive_start must be smaller than the images \(32 px\)"):
        loader(data, epoch_sides=[16, 32])


def test_progressive_schedule_shares_the_early_epochs_and_ends_at_full_size():
    def schedule(epochs, start=16, fraction=0.7):
        config = Config(pipeline="gpu", model="cpu_net", epochs=epochs, progressive_start=start,
                        progressive_fraction=fraction)
        return progressive_schedule(config.validate())

    assert schedule(10) == [16, 16, 16, 16, 24, 24, 24]
    assert schedule(10, 24) == [24] * 7
    assert schedule(12, 16, 0.5) == [16, 16, 16, 24, 24, 24]
    assert schedule(10, 0) == []
    assert schedule(2, fraction=0.9) == [16]  # the last epoch stays at full size
    assert schedule(1) == []
    assert len(schedule(100, fraction=0.57)) == 57  # 0.57 x 100 is 56.999... in floating point
    assert len(schedule(50, fraction=0.58)) == 29
    assert describe_progressive(schedule(10), 10, 32) == "epochs 1-4 at 16 px, 5-7 at 24 px, 8-10 at 32 px"
    assert describe_progressive(schedule(2, fraction=0.9), 2, 32) == "epoch 1 at 16 px, 2 at 32 px"
    assert describe_progressive(schedule(1), 1, 32) == "every epoch at 32 px"


def test_progressive_epochs_train_on_resized_images_then_full_size():
    data = numbered_images(40)
    train = loader(data, augmentation="none", epoch_sides=[16, 24], channels_last=True)
    for epoch, side in ((0, 16), (1, 24), (2, 32)):
        images, labels = epoch_batches(train, epoch)[0]
        assert images.shape[1:] == (3, side, side)
        assert images.is_contiguous(memory_format=torch.channels_last)
        if side < 32:  # the normalised image, resized with antialiasing
            expected = F.interpolate(normalised(data.images[labels]), size=(side, side), mode="bilinear",
                                     antialias=True, align_corners=False)
            assert torch.allclose(images, expected, atol=1e-5)


def test_make_gpu_loaders_follows_the_config(synthetic):
    splits = make_splits(synthetic, validation_split=100, seed=0, normalization="train_stats")
    config = Config(pipeline="gpu", augmentation="crop_flip", cutout=4, seed=5, crop_padding=3, crop_fill="reflect").validate()
    train, validation, test = make_gpu_loaders(splits, config, torch.device("cpu"), 64, 50)
    assert (train.augmentation, train.cutout, train.seed, train.batch_size) == ("crop_flip", 4, 5, 64)
    assert (train.crop_padding, train.crop_fill, train.epoch_sides) == (3, "reflect", ())
    resized = replace(config, augmentation="resized_crop_flip", crop_padding=4, crop_fill="zeros")
    assert make_gpu_loaders(splits, resized, torch.device("cpu"), 64, 50)[0].augmentation == "resized_crop_flip"
    progressive = replace(config, epochs=4, progressive_start=24, progressive_fraction=0.5)
    assert make_gpu_loaders(splits, progressive, torch.device("cpu"), 64, 50)[0].epoch_sides == (24, 24)
    assert len(train) == math.ceil(500 / 64) and len(validation) == 2 and len(test) == 4
    images, labels = next(iter(test))
    assert images.shape == (50, 3, 32, 32) and torch.equal(labels, splits.test.labels[:50])


# ------------------------------------------------------------------------------------ image operations


def test_flip_images_mirrors_only_the_selected_images():
    images = torch.rand(4, 3, 5, 6)
    out = gpu_data.flip_images(images, torch.tensor([True, False, True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])
    assert torch.equal(out[2], images[2].flip(-1)) and torch.equal(out[3], images[3])


def test_translate_moves_content_and_fills_with_zeros():
    images = torch.rand(3, 2, 6, 7)
    shift_y, shift_x = torch.tensor([1, -2, 0]), torch.tensor([-1, 3, 0])
    out = gpu_data.translate_images(images, shift_y, shift_x, max_shift=3)
    assert torch.equal(out[0, :, 1:, :-1], images[0, :, :-1, 1:])  # down 1, left 1
    assert (out[0, :, 0] == 0).all() and (out[0, :, :, -1] == 0).all()
    assert torch.equal(out[1, :, :-2, 3:], images[1, :, 2:, :-3])  # up 2, right 3
    assert torch.equal(out[2], images[2])


def test_translate_with_reflect_fill_brings_in_the_mirrored_image():
    images = torch.rand(2, 2, 6, 7)
    out = gpu_data.translate_images(images, torch.tensor([2, 0]), torch.tensor([0, -1]), max_shift=2, fill="reflect")
    assert torch.equal(out[0, :, 2:], images[0, :, :-2])  # down 2: rows 1 and 2 mirrored in above row 0
    assert torch.equal(out[0, :, 0], images[0, :, 2]) and torch.equal(out[0, :, 1], images[0, :, 1])
    assert torch.equal(out[1, :, :, :-1], images[1, :, :, 1:])  # left 1: column 5 mirrored in after column 6
    assert torch.equal(out[1, :, :, -1], images[1, :, :, -2])


def test_affine_without_rotation_or_scale_is_an_integer_translation():
    images = torch.rand(2, 3, 8, 8)
    ones, zeros = torch.ones(2), torch.zeros(2)
    torch.testing.assert_close(gpu_data.affine_images(images, zeros, zeros, zeros, ones), images)
    moved = gpu_data.affine_images(images, zeros, torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]), ones)
    expected = gpu_data.translate_images(images, torch.tensor([1, 0]), torch.tensor([2, -1]), max_shift=2)
    torch.testing.assert_close(moved, expected)


def test_affine_rotates_by_the_angle_and_scales_about_the_centre():
    images = torch.rand(1, 3, 8, 8)
    quarter = gpu_data.affine_images(images, torch.tensor([90.0]), torch.zeros(1), torch.zeros(1), torch.ones(1))
    assert any(torch.allclose(quarter, images.rot90(k, dims=(2, 3))) for k in (1, -1))
    bigger = gpu_data.affine_images(images, torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.tensor([2.0]))
    torch.testing.assert_close(bigger[0, :, 2:6:2, 2:6:2], bigger[0, :, 3:7:2, 3:7:2])  # each pixel now 2x2
    torch.testing.assert_close(bigger[0, :, 2, 2], images[0, :, 3, 3])


def test_color_jitter_with_neutral_factors_changes_nothing_and_brightness_scales():
    images = torch.rand(4, 3, 6, 6)
    ones, zeros = torch.ones(4), torch.zeros(4)
    torch.testing.assert_close(gpu_data.color_jitter_images(images, ones, ones, ones, zeros), images,
                               atol=1e-5, rtol=0)
    darker = gpu_data.color_jitter_images(images, ones * 0.5, ones, ones, zeros)
    torch.testing.assert_close(darker, images * 0.5, atol=1e-5, rtol=0)
    gray = gpu_data.color_jitter_images(images, ones, ones, zeros, zeros)  # saturation 0: gray
    torch.testing.assert_close(gray[:, 0], gray[:, 1], atol=1e-5, rtol=0)


def test_hue_shift_turns_red_into_green_and_hsv_round_trips():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    ones = torch.ones(1)
    green = gpu_data.color_jitter_images(red, ones, ones, ones, torch.tensor([1 / 3]))
    torch.testing.assert_close(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    images = torch.rand(5, 3, 4, 4)
    torch.testing.assert_close(gpu_data.hsv_to_rgb(gpu_data.rgb_to_hsv(images)), images, atol=1e-5, rtol=0)


def test_resized_crop_of_the_whole_image_is_the_image_and_boxes_fit():
    images = torch.rand(2, 3, 32, 32)
    full = torch.full((2,), 32)
    zero = torch.zeros(2, dtype=torch.int64)
    torch.testing.assert_close(gpu_data.crop_and_resize_images(images, zero, zero, full, full), images)
    half = gpu_data.crop_and_resize_images(images, zero + 16, zero, full // 2, full // 2)  # bottom-left quarter
    resized = F.interpolate(images[:, :, 16:32, 0:16], size=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(half[:, :, 1:-1, 1:-1], resized[:, :, 1:-1, 1:-1])  # the border may blend neighbours
    boxes = gpu_data.draw_augmentation("resized_crop_flip", 2000, torch.Generator().manual_seed(0))
    area = boxes["height"] * boxes["width"]
    assert (boxes["top"] >= 0).all() and (boxes["top"] + boxes["height"] <= 32).all()
    assert (boxes["left"] >= 0).all() and (boxes["left"] + boxes["width"] <= 32).all()
    assert area.min() >= 0.78 * 1024 and area.float().mean() < 1000  # scale 0.8-1.0, rounded to pixels


def test_cutout_blanks_one_square_of_the_given_size():
    images = torch.ones(2, 3, 10, 10)
    out = gpu_data.cutout_images(images, torch.tensor([0, 6]), torch.tensor([2, 5]), size=4)
    assert (out[0, :, 0:4, 2:6] == 0).all() and (out == 0).sum(dim=(1, 2, 3)).tolist() == [48, 48]
    assert (out[1, :, 6:10, 5:9] == 0).all()


def test_both_pipelines_read_one_augmentation_spec(monkeypatch):
    from torchvision.transforms import v2

    from cifar_utils import preprocessing
    from cifar_utils.data import augmentation_ops

    monkeypatch.setattr(preprocessing, "AFFINE_DEGREES", 2.0)
    monkeypatch.setattr(preprocessing, "JITTER_HUE", 0.01)
    affine, jitter, _ = augmentation_ops("affine_jitter")
    assert isinstance(affine, v2.RandomAffine) and affine.degrees == [-2.0, 2.0]
    assert jitter.hue == (-0.01, 0.01)
    drawn = gpu_data.draw_augmentation("affine_jitter", 2000, torch.Generator().manual_seed(0))
    assert 1.9 < drawn["angle"].abs().max() <= 2.0 and 0.009 < drawn["hue"].abs().max() <= 0.01


def test_both_pipelines_normalise_alike():
    from cifar_utils.data import build_transform

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torchvision_out = torch.stack([build_transform("none", MEAN, STD)(image) for image in images])
    gpu_out, _ = next(iter(GpuEvalLoader(ImageSet(images, torch.zeros(4, dtype=torch.int64), ["a"]), MEAN, STD,
                                         4, "cpu")))
    torch.testing.assert_close(gpu_out, torchvision_out)
    torch.testing.assert_close(gpu_out, normalised(images))


def test_compile_warms_up_every_progressive_size_before_training(monkeypatch, tmp_path):
    """With progressive resizing, each image size compiles before the timed epochs, not inside them."""
    from cifar_utils import experiment
    from cifar_utils.data import synthetic_dataset

    seen = {"warm-up": [], "training": []}  # (training mode, image side) of every forward pass

    class Compiled(torch.nn.Module):  # stands in for torch.compile's wrapper
        phase = "warm-up"

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            seen[self.phase].append((self.training, x.shape[-1]))
            return self.model(x)

    def fit_after_the_warm_up(*args, **kwargs):
        Compiled.phase = "training"
        return fit(*args, **kwargs)

    fit = experiment.fit
    monkeypatch.setattr(torch, "compile", Compiled)
    monkeypatch.setattr(experiment, "fit", fit_after_the_warm_up)
    config = Config(pipeline="gpu", model="cpu_net", progressive_start=16, epochs=3, compile=True,
                    validation_split=16, batch_size=16, eval_batch_size=16, augmentation="none").validate()
    experiment.train(config, tmp_path, data=synthetic_dataset(48, 16), device="cpu", progress=False,
                     log=lambda _: None)
    assert seen["warm-up"] == [(True, 16), (True, 24), (True, 32), (False, 32)]
    assert {side for training, side in seen["training"] if training} == {16, 24, 32}


def test_a_gpu_preset_on_the_torchvision_pipeline_names_every_setting_to_reset_at_once():
    from cifar_utils.presets import from_preset

    with pytest.raises(ConfigError) as info:
        from_preset("cpu", pipeline="torchvision")
    message = str(info.value)
    assert "crop_padding=2, crop_fill='reflect', alternating_flip=True need pipeline='gpu'" in message
    assert "preset 'cpu' sets crop_padding, crop_fill, alternating_flip" in message
    resets = message.rpartition(": ")[2].split()
    assert resets == ["--set", "crop_padding=4", "--set", "crop_fill=zeros", "--set", "alternating_flip=false"]
    from_preset("cpu", pipeline="torchvision", crop_padding=4, crop_fill="zeros", alternating_flip=False)  # as told
