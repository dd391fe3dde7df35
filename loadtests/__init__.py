"""Load tests (Locust) and benchmarks (wrk) against the production configuration run locally."""
