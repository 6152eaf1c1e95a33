//! scalarize-mto: Scalarization and multi-task optimization gradient aggregators, and gradient-conflict metrics.
