"""Which backend class scores a card: an explicit table each service builds at start-up.

A :class:`BackendFactory` maps backend kinds (``sklearn``, ``savedmodel``,
``tfserving``…) to builders and card frameworks to kinds. Nothing registers itself by
being imported: what a process can score is what its factory lists, so a ``tf`` card
means the same thing wherever the same factory is used, and an unknown kind is an error
naming the kinds this process offers.

- :func:`local_factory` scores in-process: ``sklearn`` cards with scikit-learn, ``tf``
  cards with their SavedModel (``models evaluate``, notebooks, the REST API by default).
- :func:`serving_factory` adds TF Serving: ``tf`` cards go to the model server (the UDF
  agent; the REST API when configured with a TF Serving target). ``savedmodel`` stays
  available as an explicit kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..card import ModelCard
from ..errors import BackendError
from ..registry import Registry
from .base import ScoringBackend

__all__ = [
    "BackendFactory",
    "Builder",
    "local_factory",
    "savedmodel_builder",
    "serving_factory",
    "sklearn_builder",
    "tfserving_builder",
]

#: builds a ready-to-score backend for a card (verifying its artifact)
Builder = Callable[[Registry, ModelCard], ScoringBackend]


class BackendFactory:
    """Builders by kind, and the kind each card framework defaults to."""

    def __init__(
        self,
        builders: Mapping[str, Builder],
        *,
        frameworks: Mapping[str, str] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._builders = dict(builders)
        self._frameworks = dict(frameworks or {})  # card framework -> kind (default: same)
        self._aliases = dict(aliases or {})  # other names of a kind (``tf`` -> ``tfserving``)
        for table in (self._frameworks, self._aliases):
            unknown = sorted(k for k in table.values() if k not in self._builders)
            if unknown:
                raise ValueError(f"kinds {unknown} have no builder")

    def __repr__(self) -> str:
        return f"BackendFactory({', '.join(self.kinds())})"

    def kinds(self) -> list[str]:
        return sorted(self._builders)

    def kind_for(self, card: ModelCard, kind: str | None = None) -> str:
        """The kind that scores ``card``: ``kind`` when given, else its framework's."""
        wanted = kind or self._frameworks.get(card.framework, card.framework)
        wanted = self._aliases.get(wanted, wanted)
        if wanted not in self._builders:
            asked = f"backend {kind!r}" if kind else f"framework {card.framework!r}"
            raise BackendError(
                f"{card.name} v{card.version}: no backend for {asked} in this process "
                f"(it offers: {', '.join(self.kinds())})"
            )
        return wanted

    def build(self, registry: Registry, card: ModelCard, kind: str | None = None) -> ScoringBackend:
        return self._builders[self.kind_for(card, kind)](registry, card)

    def extended(
        self, builders: Mapping[str, Builder], *, frameworks: Mapping[str, str] | None = None
    ) -> BackendFactory:
        """A copy with more kinds (a plug-in model kind, or a test double)."""
        return BackendFactory(
            {**self._builders, **builders},
            frameworks={**self._frameworks, **(frameworks or {})},
            aliases=self._aliases,
        )


def sklearn_builder(registry: Registry, card: ModelCard) -> ScoringBackend:
    from .sklearn_backend import SklearnBackend

    return SklearnBackend.from_card(registry, card)


def savedmodel_builder(registry: Registry, card: ModelCard) -> ScoringBackend:
    from .savedmodel import SavedModelBackend

    return SavedModelBackend.from_card(registry, card)


def tfserving_builder(config: object) -> Builder:
    """A builder of TF Serving backends with ``config`` (a ``TFServingConfig``)."""
    from .tfserving import TFServingBackend, TFServingConfig

    if not isinstance(config, TFServingConfig):
        raise TypeError(f"expected a TFServingConfig, got {type(config).__name__}")

    def build(registry: Registry, card: ModelCard) -> ScoringBackend:
        return TFServingBackend.from_card(registry, card, config=config)

    return build


def local_factory() -> BackendFactory:
    """In-process scoring: scikit-learn cards, and TF cards from their SavedModel."""
    return BackendFactory(
        {"sklearn": sklearn_builder, "savedmodel": savedmodel_builder},
        frameworks={"tf": "savedmodel"},
    )


def serving_factory(tfserving: object) -> BackendFactory:
    """scikit-learn in-process, TF cards through TF Serving (``tfserving``, a
    ``TFServingConfig``); ``savedmodel`` scores a TF card in-process when asked for."""
    return BackendFactory(
        {
            "sklearn": sklearn_builder,
            "savedmodel": savedmodel_builder,
            "tfserving": tfserving_builder(tfserving),
        },
        frameworks={"tf": "tfserving"},
        aliases={"tf": "tfserving"},
    )
