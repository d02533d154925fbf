"""The shard contract: sample keys are webdataset-safe and distinct for distinct records."""

import numpy as np

from tinydnabert import formats


def test_sample_keys_have_no_dot_or_slash_and_do_not_collide():
    names = ["NC_000001.11", "NC_000001_11", "NC_000001%2E11", "chr1/alt", "chr20"]
    keys = [formats.sample_key(n, 10, 20, "+") for n in names]
    assert len(set(keys)) == len(names)
    assert all("." not in k and "/" not in k for k in keys)
    assert formats.sample_key("chr20", 10000, 11024, "-") == "chr20:10000-11024:r"


def test_ids_round_trip_as_little_endian_uint16():
    ids = np.array([0, 1, 4, 1023, 65535], dtype=np.int64)
    raw = formats.encode_ids(ids)
    assert raw == b"\x00\x00\x01\x00\x04\x00\xff\x03\xff\xff"
    assert formats.decode_ids(raw).tolist() == ids.tolist()
