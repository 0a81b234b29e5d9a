"""tertulia's benchmark suite; see bench/README.md. Run by hand, never in the tests."""
