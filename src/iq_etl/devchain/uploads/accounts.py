"""Account layouts of the generated IQ instructions, checked against the decoders' session rule."""
from __future__ import annotations

from solders.instruction import AccountMeta
from solders.pubkey import Pubkey

from iq_etl.protocol import IQRecord, session_account_position


def _accounts(n: int, session_at: int | None, session: Pubkey | None, user: Pubkey,
              roles: dict[int, tuple[Pubkey, bool]]) -> list[AccountMeta]:
    """n accounts: the user signs at 0, the session (writable) at its position, others by role."""
    out = []
    for i in range(n):
        if i == 0:
            out.append(AccountMeta(user, True, True))
        elif session_at is not None and i == session_at:
            out.append(AccountMeta(session, False, True))
        else:
            key, writable = roles[i]
            out.append(AccountMeta(key, False, writable))
    return out


def check_position(rec: IQRecord, accounts: list[AccountMeta], session: Pubkey | None) -> None:
    """The decoders' session rule must find the session where this generator put it."""
    pos = session_account_position(rec)
    if session is not None and (pos is None or accounts[pos].pubkey != session):
        raise AssertionError(f"{rec.instruction}: session not at the decoder's position {pos}")
