"""The model cost ledger: every attempt of the gateway, priced, in the `model_calls` table.

Prices come from the models file (USD per million tokens) and are charged in integer
micro-dollars: a million tokens at $0.15 is 150,000 micro-dollars, one token 0.15, rounded half
up to 0. Writes are blocking database work: the gateway runs them in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.db import MICRO_USD_PER_USD, ModelCall

__all__ = ["CaseCost", "ModelLedger", "price_micro_usd"]


def price_micro_usd(
    tokens_in: int, tokens_out: int, input_usd_per_1m: Decimal, output_usd_per_1m: Decimal
) -> int:
    """USD per million tokens times tokens is exactly micro-dollars."""
    cost = tokens_in * input_usd_per_1m + tokens_out * output_usd_per_1m
    return int(cost.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class CaseCost:
    case_id: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost_micro_usd: int

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_micro_usd) / MICRO_USD_PER_USD


class ModelLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, calls: Sequence[ModelCall]) -> None:
        """One transaction for the attempts of one gateway run."""
        if not calls:
            return
        with Session(self._engine) as session:
            session.add_all(calls)
            session.commit()

    def calls(self, case_id: str) -> list[ModelCall]:
        with Session(self._engine) as session:
            statement = (
                select(ModelCall).where(ModelCall.case_id == case_id).order_by(col(ModelCall.id))
            )
            return list(session.exec(statement).all())

    def case_totals(self, case_id: str) -> CaseCost:
        with Session(self._engine) as session:
            statement = select(
                func.count(col(ModelCall.id)),
                func.coalesce(func.sum(ModelCall.tokens_in), 0),
                func.coalesce(func.sum(ModelCall.tokens_out), 0),
                func.coalesce(func.sum(ModelCall.cost_micro_usd), 0),
            ).where(ModelCall.case_id == case_id)
            calls, tokens_in, tokens_out, cost = session.exec(statement).one()
        return CaseCost(case_id, int(calls), int(tokens_in), int(tokens_out), int(cost))
