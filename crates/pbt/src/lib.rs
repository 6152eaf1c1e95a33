//! scalarize-pbt: A reusable population-based-training engine.
