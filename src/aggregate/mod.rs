//! Aggregation: one series per (namespace, name, dimensions, unit, resolution), each a mergeable
//! exponential histogram with exact count, sum, min and max; a cap on live series.
