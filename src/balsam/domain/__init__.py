"""Pure domain logic: job states, resource arithmetic, command rendering. Standard library only."""
