"""Use cases over the store. Each public function owns exactly one transaction."""
