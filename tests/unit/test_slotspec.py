import pytest

from iq_etl.errors import SettingsError
from iq_etl.solana.slots import SLOTS_PER_EPOCH, SlotRange, epoch_bounds, epoch_of, parse_slot_spec


def test_slot_range_is_inclusive():
    assert parse_slot_spec("100:200") == SlotRange(100, 200)
    assert parse_slot_spec(" 7 : 7 ").slot_count == 1


def test_single_epoch():
    assert parse_slot_spec("0") == SlotRange(0, SLOTS_PER_EPOCH - 1)
    assert parse_slot_spec("800") == SlotRange(800 * 432_000, 801 * 432_000 - 1)


def test_epoch_range_is_inclusive():
    r = parse_slot_spec("3-5")
    assert r == SlotRange(3 * 432_000, 6 * 432_000 - 1)
    assert list(r.epochs()) == [3, 4, 5]


@pytest.mark.parametrize("spec", ["", "abc", "5:4", "6-2", "1:2:3", "-1", "1.5", "1-", ":5"])
def test_bad_specs_name_the_input(spec):
    with pytest.raises(SettingsError) as info:
        parse_slot_spec(spec)
    assert repr(spec) in str(info.value)


def test_epoch_of_and_bounds_agree():
    for slot in (0, 431_999, 432_000, 123_456_789):
        lo, hi = epoch_bounds(epoch_of(slot))
        assert lo <= slot <= hi
    assert epoch_of(432_000) == 1
    with pytest.raises(ValueError):
        epoch_of(-1)


def test_split_by_epoch():
    parts = list(SlotRange(431_990, 864_010).split_by_epoch())
    assert parts == [(0, SlotRange(431_990, 431_999)), (1, SlotRange(432_000, 863_999)),
                     (2, SlotRange(864_000, 864_010))]
    assert str(parts[0][1]) == "431990:431999"


# --- what people type by mistake (operations issue, item 9) -------------------------------------

def test_a_slot_range_typed_with_a_dash_is_refused_with_the_fix():

    with pytest.raises(SettingsError, match=r"did you mean the slot range 398736000:398736100\?"):
        parse_slot_spec("398736000-398736100")  # read as epochs, it planned 43.6 M slots


def test_an_epoch_beyond_the_tip_is_refused():

    with pytest.raises(SettingsError, match=r"beyond the chain tip.*did you mean slot 398736000"):
        parse_slot_spec("398736000")
    with pytest.raises(SettingsError, match="beyond the chain tip"):
        parse_slot_spec("1:999999999999")


def test_the_tip_bound_grows_with_time_and_keeps_real_epochs():
    import datetime as dt

    from iq_etl.solana.slots import newest_possible_epoch
    assert newest_possible_epoch(dt.date(2020, 3, 16)) == 1
    assert newest_possible_epoch(dt.date(2026, 12, 1)) > 925  # slot ~400M (epoch 925) is real history
    assert parse_slot_spec("925") == SlotRange(925 * SLOTS_PER_EPOCH, 926 * SLOTS_PER_EPOCH - 1)
