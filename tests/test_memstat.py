"""Parsers and readers of one memcg's files, on real file contents and on garbage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from otel_pagecache.memstat import (
    V1_STAT_KEYS,
    V2_STAT_KEYS,
    ReadStats,
    parse_flat_keyed,
    parse_meminfo,
    parse_pressure_totals,
    parse_single_value,
    read_file,
    read_memcg,
)
from tests.cgroup_trees import (
    PRESSURE_TEMPLATE,
    V1_STAT_TEMPLATE,
    V2_STAT_TEMPLATE,
    write_v1_cgroup,
    write_v2_cgroup,
)


def test_v2_real_memory_stat_by_key():
    stat = parse_flat_keyed(V2_STAT_TEMPLATE.encode(), V2_STAT_KEYS)
    assert stat["file"] == 17410793472
    assert stat["active_file"] == 8717561856
    assert stat["inactive_file"] == 8693084160
    assert stat["dirty"] == 2060857344
    assert stat["writeback"] == 0
    assert stat["mapped"] == 344010752
    assert stat["shmem"] == 0
    assert stat["refault_file"] == 0
    assert stat["activate_file"] == 0
    assert stat["tree_pgmajfault"] == 36762
    # Keys we did not ask for never appear under any name.
    assert "anon" not in stat and "kernel" not in stat


def test_v1_real_memory_stat_local_not_total():
    text = (
        "cache 4313088\nrss 1675264\ntotal_cache 9999999\ninactive_file 3932160\n"
        "active_file 380928\ntotal_inactive_file 7777\ntotal_pgmajfault 15\npgmajfault 3\n"
    )
    stat = parse_flat_keyed(text.encode(), V1_STAT_KEYS)
    assert stat["file"] == 4313088
    assert stat["inactive_file"] == 3932160
    assert stat["tree_inactive_file"] == 7777
    assert stat["tree_pgmajfault"] == 15
    # v1 has no workingset_activate_file: no entry, never a zero.
    assert "activate_file" not in parse_flat_keyed(V1_STAT_TEMPLATE.encode(), V1_STAT_KEYS)


def test_keys_can_move_and_unknown_keys_are_ignored():
    text = b"brand_new_key 5\nfile_dirty 8192\nfile 4096\nsomething else entirely\n"
    stat = parse_flat_keyed(text, V2_STAT_KEYS)
    assert stat == {"dirty": 8192, "file": 4096}


def test_misaligned_lines_do_not_shift_pairs():
    # A 3-token line followed by a 1-token line keeps the token count even;
    # the pairs must still come from their own lines.
    text = b"file_dirty 1\nstray\nfile 2 3\ninactive_file 12288\n"
    stat = parse_flat_keyed(text, V2_STAT_KEYS)
    assert stat == {"dirty": 1, "inactive_file": 12288}


def test_single_values_and_unlimited():
    assert parse_single_value(b"max\n") is None
    assert parse_single_value(b"536870912\n") == 536870912
    assert parse_single_value(b"") is None
    assert parse_single_value(None) is None
    assert parse_single_value(b"-5") is None
    assert parse_single_value(b"garbage") is None


def test_pressure_totals_real_file():
    assert parse_pressure_totals(PRESSURE_TEMPLATE.encode()) == {"some": 0, "full": 0}
    text = b"some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0 total=789\n"
    assert parse_pressure_totals(text) == {"some": 123456, "full": 789}


def test_meminfo_in_bytes():
    text = (
        b"MemTotal:       24576000 kB\nCached:           336000 kB\n"
        b"Active(file):  1 kB\nHugePages_Total:       0\n"
    )
    info = parse_meminfo(text)
    assert info["Cached"] == 336000 * 1024
    assert info["Active(file)"] == 1024
    assert info["HugePages_Total"] == 0


def test_read_v2_memcg_files(tmp_path):
    d = write_v2_cgroup(
        tmp_path,
        "/a",
        {"file": 8192, "active_file": 4096, "inactive_file": 4096},
        current=1 << 20,
        maximum=1 << 30,
        events_max=7,
        pressure_total=(1500000, 250000),
    )
    reading = read_memcg(str(d), 2)
    assert reading.present
    assert reading.usage == 1 << 20
    assert reading.limit == 1 << 30
    assert reading.limit_hits == 7
    assert reading.pressure_us == {"some": 1500000, "full": 250000}
    assert reading.stat["active_file"] == 4096


def test_read_v2_unlimited_and_missing_psi(tmp_path):
    d = write_v2_cgroup(tmp_path, "/a", {}, current=1, maximum="max", pressure_total=None)
    reading = read_memcg(str(d), 2)
    assert reading.limit is None
    assert reading.pressure_us == {}


def test_read_v1_memcg_files(tmp_path):
    d = write_v1_cgroup(
        tmp_path,
        "/a",
        {"cache": 8192, "active_file": 4096},
        usage=12288,
        limit=1 << 30,
        failcnt=3,
    )
    reading = read_memcg(str(d), 1)
    assert (reading.usage, reading.limit, reading.limit_hits) == (12288, 1 << 30, 3)
    unlimited = write_v1_cgroup(tmp_path, "/b", {})
    assert read_memcg(str(unlimited), 1).limit is None


def test_vanished_cgroup_is_not_an_error(tmp_path):
    stats = ReadStats()
    reading = read_memcg(str(tmp_path / "gone"), 2, stats)
    assert not reading.present
    assert (stats.vanished, stats.errors) == (1, 0)
    assert read_file(str(tmp_path / "gone" / "memory.stat")) is None


@given(st.binary(max_size=4096))
def test_parsers_never_raise_on_random_bytes(data):
    parse_flat_keyed(data, V1_STAT_KEYS)
    parse_flat_keyed(data, V2_STAT_KEYS)
    parse_single_value(data)
    parse_pressure_totals(data)
    parse_meminfo(data)


@given(st.integers(min_value=0, max_value=len(V2_STAT_TEMPLATE)), st.text(max_size=200))
def test_truncated_and_garbled_memory_stat(cut, junk):
    data = (V2_STAT_TEMPLATE[:cut] + junk).encode("utf-8", "replace")
    stat = parse_flat_keyed(data, V2_STAT_KEYS)
    assert all(isinstance(v, int) and v >= 0 for v in stat.values())
    # Whole lines before the cut keep their real values.
    complete = V2_STAT_TEMPLATE[:cut].rsplit("\n", 1)[0]
    if "\nfile_mapped " in "\n" + complete + "\n" and "file_mapped" in stat and not junk.strip():
        assert stat["mapped"] == 344010752
