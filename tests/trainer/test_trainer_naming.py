"""Run names (trainer/naming.py): the seed's scheme, always one safe, unique file name."""

import datetime as dt

import pytest

from trainer import naming

WHEN = dt.datetime(2026, 11, 28, 16, 51, 43)


def test_seed_scheme_without_stray_quote():
    name = naming.make_run_name(
        "sfno", "64x128", ["data.num_examples=50", "training.max_epochs=1"], when=WHEN
    )
    assert name == "2026-11-28_16-51-43_sfno64x128_data.num_examples=50_training.max_epochs=1"
    assert naming.make_run_name("fno", "32x64", [], when=WHEN) == "2026-11-28_16-51-43_fno32x64"


def test_overrides_sorted_like_hydra_and_bookkeeping_keys_left_out():
    a = naming.make_run_name("fno", "32x64", ["b=1", "a=2", "run_name=x", "log_dir=/tmp/out"], when=WHEN)
    b = naming.make_run_name("fno", "32x64", ["a=2", "b=1"], when=WHEN)
    assert a == b == "2026-11-28_16-51-43_fno32x64_a=2_b=1"
    assert "run_name" not in a
    assert "log_dir" not in a


def test_unsafe_characters_replaced_and_hashed():
    name = naming.make_run_name("fno", "32x64", ["paths.data_root=/a/b"], when=WHEN)
    assert "/" not in name
    assert naming.check_run_name(name) == name
    # "/a/b" and "-a-b" read the same once replaced: the hash keeps them apart.
    other = naming.make_run_name("fno", "32x64", ["paths.data_root=-a-b"], when=WHEN)
    assert other != name


@pytest.mark.parametrize("value", ["'a b'", '"x\'y"', "'q\"r'", "'ä'", "'a\\b'", "'*'", "'$HOME'", "'a:b'"])
def test_every_unsafe_value_gives_a_safe_name(value):
    name = naming.make_run_name("fno", "32x64", [f"+note={value}"], when=WHEN)
    naming.check_run_name(name)


def test_long_names_are_cut_to_255_bytes_and_stay_unique():
    long_a = [f"+k{i}={'v' * 40}" for i in range(10)]
    long_b = [*long_a[:-1], "+k9=" + "v" * 39 + "w"]  # differs only in the last character
    a = naming.make_run_name("sfno", "64x128", long_a, when=WHEN)
    b = naming.make_run_name("sfno", "64x128", long_b, when=WHEN)
    assert len(a.encode()) <= 255
    assert len(b.encode()) <= 255
    assert a != b
    assert a == naming.make_run_name("sfno", "64x128", long_a, when=WHEN)  # deterministic
    naming.check_run_name(a)


def test_multibyte_values_stay_within_255_bytes():
    name = naming.make_run_name("fno", "32x64", ["+note='" + "é" * 300 + "'"], when=WHEN)
    assert len(name.encode()) <= 255


def test_suffix_separates_same_second_names():
    a = naming.make_run_name("fno", "32x64", ["a=1"], when=WHEN)
    b = naming.make_run_name("fno", "32x64", ["a=1"], when=WHEN, suffix="r2")
    assert a != b
    assert b.endswith("_r2")


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", ".hidden", "debug", "a b", "x" * 256])
def test_check_run_name_refuses_unsafe(bad):
    with pytest.raises(ValueError, match="run_name"):
        naming.check_run_name(bad)


def test_run_subdir_files_by_the_name_date():
    assert naming.run_subdir("2026-11-28_23-59-59_fno32x64") == "2026-11-28/2026-11-28_23-59-59_fno32x64"
    assert naming.run_subdir("myrun").endswith("/myrun")
