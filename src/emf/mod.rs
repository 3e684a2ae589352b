//! Metric lines in CloudWatch Embedded Metric Format: a cheap pre-check, the parse, validation
//! with a reason for every rejection, and the data points and properties of a valid line.
