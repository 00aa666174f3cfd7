"""The role every RPC needs. reader < writer < admin; a role includes the ones below it.

- reader: Get, List, Explain and Recommend calls, and the review page;
- writer: adds upserts, events and tree builds;
- admin: adds RefreshModels, deletes and key management.

`METHOD_ROLES` names every method of the four services by its full name; a method missing from
it is refused to everyone (tests/server/test_auth.py checks the table against the descriptors).
"""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    READER = 1
    WRITER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: reader, writer or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


_CATALOG = "/interesttree.v1.CatalogService/"
_INTERESTS = "/interesttree.v1.InterestService/"
_RECOMMEND = "/interesttree.v1.RecommendationService/"
_ADMIN = "/interesttree.v1.AdminService/"

METHOD_ROLES: dict[str, Role] = {
    _CATALOG + "GetItem": Role.READER,
    _CATALOG + "ListItems": Role.READER,
    _CATALOG + "UpsertItems": Role.WRITER,
    _CATALOG + "DeleteItems": Role.ADMIN,
    _INTERESTS + "GetInterestTree": Role.READER,
    _INTERESTS + "ExplainInterests": Role.READER,
    _INTERESTS + "ListInterestTreeRevisions": Role.READER,
    _INTERESTS + "ListTaxonomyNodes": Role.READER,
    _INTERESTS + "RecordEvents": Role.WRITER,
    _INTERESTS + "BuildInterestTree": Role.WRITER,
    _INTERESTS + "BatchBuildInterestTrees": Role.WRITER,
    _INTERESTS + "DeleteUser": Role.ADMIN,
    _RECOMMEND + "Recommend": Role.READER,
    _RECOMMEND + "RecommendByInterest": Role.READER,
    _RECOMMEND + "ListSimilarItems": Role.READER,
    _RECOMMEND + "ListSimilarItems": Role.READER,
    _ADMIN + "RefreshModels": Role.ADMIN,
}

REVIEW_ROLE = Role.READER
"""The review page and its JSON API."""
METRICS_ROLE = Role.ADMIN
"""/metrics labels series by tenant, so it takes an admin key of the default tenant."""


def required_role(method: str) -> Role | None:
    """The role `method` needs; None for a method this table does not know (refused)."""
    return METHOD_ROLES.get(method)
