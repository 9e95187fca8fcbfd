"""The base class of every config model: pure data, frozen, unknown keys rejected."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown keys ("Additional properties are not allowed")."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
