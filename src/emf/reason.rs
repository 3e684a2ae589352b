//! Reason codes: why a metric line was rejected, or what was noticed on an accepted one.
//!
//! Each code is stable: it is the label of the rejection counters, the word `loupe check` prints
//! and the column of the fixtures' expectations.

macro_rules! reasons {
    ($($variant:ident => $code:literal, $family:ident, $warning:literal;)*) => {
        /// Why a line was rejected, or a warning on an accepted one. `as_str` gives the reason
        /// code used in counters, `loupe check` and `EXPECTED.tsv`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $(#[doc = $code] $variant),*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The reason code, e.g. `json_parse_error`.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $code),* }
            }

            /// `"parsing"` for a line that could not be read as an EMF document at all,
            /// `"validation"` for everything else (the two CloudWatch error families,
            /// `EMFParsingErrors` and `EMFValidationErrors`).
            pub fn family(self) -> &'static str {
                match self { $(Reason::$variant => stringify!($family)),* }
            }

            /// Counted, but the line still yields data points.
            pub fn is_warning(self) -> bool {
                match self { $(Reason::$variant => $warning),* }
            }

            /// The reason whose code is exactly `s`.
            pub fn from_code(s: &str) -> Option<Reason> {
                match s { $($code => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    // Stages 0-2: finding and reading the JSON document.
    JsonParseError => "json_parse_error", parsing, false;
    TextBeforeJson => "text_before_json", parsing, false;
    EventTooLarge => "event_too_large", parsing, false;
    EmfInsideLambdaJsonEnvelope => "emf_inside_lambda_json_envelope", parsing, true;
    EmfV0RootCloudWatchMetricsIgnored => "emf_v0_root_cloudwatchmetrics_ignored", validation, false;
    LambdaPrefixStripped => "lambda_prefix_stripped", validation, true;
    // Stage 3: the event as a whole.
    AwsNotObject => "aws_not_object", validation, false;
    CloudWatchMetricsMissingOrNotArray => "cloudwatchmetrics_missing_or_not_array", validation, false;
    NoMetricDirectives => "no_metric_directives", validation, false;
    TimestampMissingUsedRecordTime => "timestamp_missing_used_record_time", validation, true;
    TimestampNotNumber => "timestamp_not_number", validation, false;
    TimestampOutOfRange => "timestamp_out_of_range", validation, false;
    DirectiveNotObject => "directive_not_object", validation, false;
    NamespaceInvalid => "namespace_invalid", validation, false;
    NamespaceReservedAws => "namespace_reserved_AWS", validation, false;
    DimensionsNotArrayOfStringArrays => "dimensions_not_array_of_string_arrays", validation, false;
    DimensionSetOver30 => "dimension_set_over_30", validation, false;
    MetricsNotArrayOfObjects => "metrics_not_array_of_objects", validation, false;
    MetricDefinitionsOver100 => "metric_definitions_over_100", validation, false;
    MetricDefinitionNameInvalid => "metric_definition_name_invalid", validation, false;
    // Stage 4: dimension sets and metrics, one by one.
    DimensionSetDroppedInvalidOrMissingTarget => "dimension_set_dropped_invalid_or_missing_target", validation, true;
    PublishedWithoutDimensions => "published_without_dimensions", validation, true;
    DuplicateMetricDefinitionIgnored => "duplicate_metric_definition_ignored", validation, true;
    MetricInvalidUnit => "metric_invalid_unit", validation, false;
    MetricInvalidStorageResolution => "metric_invalid_storage_resolution", validation, false;
    MetricConflictingStorageResolution => "metric_conflicting_storage_resolution", validation, false;
    MetricTargetMissing => "metric_target_missing", validation, false;
    MetricValueEmptyArray => "metric_value_empty_array", validation, false;
    MetricTooManyValues => "metric_too_many_values", validation, false;
    MetricValueNotNumeric => "metric_value_not_numeric", validation, false;
    MetricValueNull => "metric_value_null", validation, false;
    DirectiveHasNoMetrics => "directive_has_no_metrics", validation, false;
    TooManyDataPoints => "too_many_data_points", validation, false;
}
