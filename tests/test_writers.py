import numpy as np

from tailorml.config import WritersConfig
from tailorml.data.writers import CLASS_NAMES, make_writers, personal_label
from tailorml.personalize.dataset import from_writers

SMALL = WritersConfig(individuals=4, general_writers=2, samples_per_class=2, seed=3)


def test_thirty_classes_with_flips_like_the_paper():
    assert len(CLASS_NAMES) == 30
    assert CLASS_NAMES[7] == "7" and CLASS_NAMES[17] == "7-hflip" and CLASS_NAMES[27] == "7-vflip"


def test_personal_label_conventions_swap_consistently_across_orientations():
    assert personal_label(1, 0, (1, 7)) == 7
    assert personal_label(7, 2, (1, 7)) == 21
    assert personal_label(3, 1, (1, 7)) == 13
    assert personal_label(3, 1, None) == 13


def test_writers_are_deterministic_and_balanced():
    first, again = make_writers(SMALL), make_writers(SMALL)
    assert np.array_equal(first.images, again.images)
    assert first.images.shape == (6 * 60, 1, 16, 16)
    assert first.images.min() >= 0.0 and first.images.max() <= 1.0
    for writer in range(6):
        labels = first.labels[first.writer == writer]
        assert np.bincount(labels, minlength=30).tolist() == [2] * 30
    assert all(style.swap is None for style in first.styles[4:])  # general writers never swap
    other = make_writers(SMALL.model_copy(update={"seed": 4}))
    assert not np.array_equal(first.images, other.images)


def test_flipped_class_images_are_mirrored_renderings():
    writers = make_writers(
        WritersConfig(individuals=2, general_writers=1, samples_per_class=1, max_noise=0.0)
    )
    upright = writers.images[(writers.writer == 0) & (writers.labels < 10)]
    hflip = writers.images[(writers.writer == 0) & (writers.labels >= 10) & (writers.labels < 20)]
    # mirrored ink mass: the horizontal centre of mass moves to the other side on average
    columns = np.arange(16)

    def centre(images):
        return (images.sum(axis=(1, 2)) * columns).sum(axis=1) / images.sum(axis=(1, 2, 3))

    assert np.corrcoef(centre(upright), 15 - centre(hflip))[0, 1] > 0.3


def test_personal_data_view_of_the_writers():
    data = from_writers(SMALL)
    assert data.ids == [f"writer-{i:03d}" for i in range(4)]
    assert len(data.individual_train["writer-000"]) == 42  # 70 % of 60
    assert len(data.individual_test["writer-000"]) == 18
    general = data.general_train("writer-000")
    assert np.array_equal(general, data.general_train("writer-003"))  # shared D_G
    assert data.general_key("writer-001") == "shared"
    assert not set(general) & set(data.general_test("writer-000"))
    assert set(data.groups.values()) <= {"personal-labels", "standard-labels"}
