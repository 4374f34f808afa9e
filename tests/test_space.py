import pytest

from snnet.errors import SnnetError
from snnet.families import get_family
from snnet.space import build_space, paired_windows


def reference_pair_order(depth=12):
    """The SN-Net reference order for kernel 2, stride 1, written out from its definition."""
    positions = [((0, 0), 0), ((0, 1), 0), ((1, 0), 0), ((1, 1), 0)]
    for w in range(1, depth - 1):
        positions += [((w, w + 1), w), ((w + 1, w), w), ((w + 1, w + 1), w)]
    return positions


def test_deit_space_is_the_reference_configuration():
    space = get_family("deit").space()
    assert len(space) == 71 and space.num_layers == 22
    assert [(c.kind, c.front, c.back) for c in space.configs[:3]] == [("anchor", i, i) for i in range(3)]
    assert space.anchors == ("deit_tiny", "deit_small", "deit_base")
    expected = [(0, 1, jk, layer) for jk, layer in reference_pair_order()]
    expected += [(1, 2, jk, layer + 11) for jk, layer in reference_pair_order()]
    got = [(c.front, c.back, (c.front_block, c.back_block), c.layer) for c in space.configs[3:]]
    assert got == expected
    assert [c.id for c in space] == list(range(71))
    assert all(c.front == 0 for c in space.configs[3:37]) and all(c.front == 1 for c in space.configs[37:])
    assert (space[24].front_block, space[24].back_block) == (7, 7)
    assert (space[56].front_block, space[56].back_block) == (6, 7)


def test_slow_to_fast_reverses_each_pair():
    space = get_family("deit").space(direction="slow-to-fast")
    assert len(space) == 71
    assert {(c.front, c.back) for c in space.configs[3:37]} == {(1, 0)}
    assert {(c.front, c.back) for c in space.configs[37:]} == {(2, 1)}
    assert space.layer_pairs[0] == (1, 0)


@pytest.mark.parametrize("num_anchors", [1, 2, 4, 5])
def test_any_number_of_anchors(num_anchors):
    space = build_space([f"a{i}" for i in range(num_anchors)], [12] * num_anchors)
    pairs = num_anchors - 1
    assert len(space) == num_anchors + 34 * pairs
    assert space.num_layers == 11 * pairs
    assert space.layer_pairs == tuple((i, i + 1) for i in range(pairs) for _ in range(11))


def test_windows_share_layers_and_never_repeat_positions():
    for kernel, stride in [(1, 1), (2, 1), (3, 1), (3, 2), (4, 4), (12, 12), (5, 3)]:
        windows = paired_windows(12, kernel, stride)
        positions = [p for window in windows for p in window]
        assert len(positions) == len(set(positions))
        covered = {(j, k) for s in range(0, 12, stride) for j in range(s, min(s + kernel, 12))
                   for k in range(s, min(s + kernel, 12))}
        assert set(positions) == covered
    assert len(paired_windows(12, 12, 12)) == 1 and len(paired_windows(12, 12, 12)[0]) == 144
    assert paired_windows(12, 1, 1) == [[(i, i)] for i in range(12)]


def test_explicit_windows():
    space = build_space(["a", "b"], [4, 4], windows=[[(0, 1)], [(1, 2), (2, 3)]])
    assert [(c.front_block, c.back_block, c.layer) for c in space.configs[2:]] == [(0, 1, 0), (1, 2, 1), (2, 3, 1)]
    with pytest.raises(SnnetError, match="outside blocks"):
        build_space(["a", "b"], [4, 4], windows=[[(0, 4)]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel=13), "kernel must be between 1 and the anchors' depth 12"),
        (dict(kernel=0), "kernel must be between"),
        (dict(stride=0), "stride must be at least 1"),
        (dict(direction="sideways"), "unknown direction"),
    ],
)
def test_bad_space_requests(kwargs, message):
    with pytest.raises(SnnetError, match=message):
        get_family("mini").space(**kwargs)


def test_unequal_depths_and_bad_ids():
    with pytest.raises(SnnetError, match="equal depth"):
        build_space(["a", "b"], [12, 24])
    space = get_family("deit").space()
    for bad in (71, -1, 1000):
        with pytest.raises(SnnetError, match="out of range: this space has ids 0-70"):
            space[bad]
    with pytest.raises(SnnetError, match="must be an integer"):
        space["3"]


def test_unknown_family():
    with pytest.raises(SnnetError, match="unknown family 'convnext': choose from deit, levit, mini, mini-resnet, "
                                         "resnet, resnet-swin, swin"):
        get_family("convnext")


def test_paths_must_join_their_anchors_with_their_layers():
    from snnet.space import Segment

    space = build_space(["a", "b", "c"], [4, 4, 4])  # layers 0-2 join a->b, 3-5 join b->c
    good = space.with_paths([((Segment(0, 0, 1), Segment(1, 2, 2), Segment(2, 3, 3)), (1, 4))])
    assert len(good) == len(space) + 1 and good[len(space)].layers == (1, 4)
    for segments, layers, message in [
        ((Segment(0, 0, 1), Segment(1, 2, 3)), (4,), "layer 4 does not join anchors 0 and 1"),
        ((Segment(0, 0, 1), Segment(1, 2, 2)), (1,), "must start at a first block and end at a last block"),
        ((Segment(0, 1, 1), Segment(1, 2, 3)), (1,), "must start at a first block"),
        ((Segment(0, 0, 1), Segment(1, 2, 3)), (), "2 segments need 1 layers"),
        ((Segment(0, 0, 5), Segment(1, 2, 3)), (1,), "outside its anchor's blocks"),
    ]:
        with pytest.raises(SnnetError, match=message):
            space.with_paths([(segments, layers)])


def test_stage_spaces_follow_the_reference_rules():
    from snnet.space import build_stage_space, unpaired_windows

    assert unpaired_windows(2, 4) == [[(0, 1)], [(1, 2), (1, 3)]]
    assert unpaired_windows(2, 6) == [[(0, 1), (0, 2)], [(1, 3), (1, 4), (1, 5)]]
    space = build_stage_space(["r18", "r50"], [(2, 2, 2, 2), (3, 4, 6, 3)], stages=(1, 2))
    assert len(space) == 10 and space.num_layers == 4 and space.depths == (8, 16)
    assert [(c.stage, c.front_block, c.back_block, c.layer) for c in space.configs[2:]] == [
        (1, 2, 4, 0), (1, 3, 5, 1), (1, 3, 6, 1), (2, 4, 8, 2), (2, 4, 9, 2), (2, 5, 10, 3), (2, 5, 11, 3), (2, 5, 12, 3)]
    with pytest.raises(SnnetError, match="stage 3 is not a stage every anchor has before its last"):
        build_stage_space(["r18", "r50"], [(2, 2, 2, 2), (3, 4, 6, 3)], stages=(3,))
    with pytest.raises(SnnetError, match="from the shallower stage to the deeper one"):
        build_stage_space(["r18", "r50"], [(2, 2, 2, 2), (3, 4, 6, 3)], stages=(1,), direction="slow-to-fast")
