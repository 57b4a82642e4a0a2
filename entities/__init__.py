"""The entity programming model (durable entities and critical sections): issue 3."""

__all__: list[str] = []
