-- nightowl base schema.
--
-- Column names follow the PHP agent's v1 schema so existing SQL keeps working;
-- types are the honest ones: event time as timestamptz (created_at, guarded:
-- time_guarded says the drain clock was used), the SDK's raw timestamp as
-- double precision, microsecond durations / sizes / memory as bigint, ids as
-- uuid (invalid -> NULL), JSON carried in strings as jsonb.  Text is text,
-- never varchar(n): an over-long value can never reject a batch.
--
-- `v` is smallint on purpose: a record with an absurd schema version is the
-- one value Postgres itself refuses (22003), which the drain quarantines
-- payload by payload instead of blocking the stream.
--
-- Raw tables are partitioned by range of created_at: daily children
-- <table>_pYYYYMMDD (nightowl/partitions.py) and a DEFAULT child so that no
-- row is ever refused for want of a partition.

CREATE TABLE nightowl_requests (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    method text,
    url text,
    route_name text,
    route_methods jsonb,
    route_domain text,
    route_path text,
    route_action text,
    ip text,
    duration bigint,
    status_code bigint,
    request_size bigint,
    response_size bigint,
    bootstrap bigint,
    before_middleware bigint,
    action bigint,
    render bigint,
    after_middleware bigint,
    sending bigint,
    terminating bigint,
    exceptions bigint NOT NULL DEFAULT 0,
    logs bigint NOT NULL DEFAULT 0,
    queries bigint NOT NULL DEFAULT 0,
    lazy_loads bigint NOT NULL DEFAULT 0,
    jobs_queued bigint NOT NULL DEFAULT 0,
    mail bigint NOT NULL DEFAULT 0,
    notifications bigint NOT NULL DEFAULT 0,
    outgoing_requests bigint NOT NULL DEFAULT 0,
    files_read bigint NOT NULL DEFAULT 0,
    files_written bigint NOT NULL DEFAULT 0,
    cache_events bigint NOT NULL DEFAULT 0,
    hydrated_models bigint NOT NULL DEFAULT 0,
    peak_memory_usage bigint NOT NULL DEFAULT 0,
    exception_preview text,
    context jsonb,
    headers jsonb,
    payload jsonb,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_requests_pdefault PARTITION OF nightowl_requests DEFAULT;

CREATE INDEX nightowl_requests_created_at_idx ON nightowl_requests (created_at);
CREATE INDEX nightowl_requests_trace_id_idx ON nightowl_requests (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_requests_group_hash_created_at_idx ON nightowl_requests (group_hash, created_at);
CREATE INDEX nightowl_requests_user_id_created_at_idx ON nightowl_requests (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_requests_status_code_idx ON nightowl_requests (status_code);

CREATE TABLE nightowl_queries (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    sql_query text NOT NULL DEFAULT '',
    file text,
    line bigint,
    duration bigint,
    connection text,
    connection_type text,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_queries_pdefault PARTITION OF nightowl_queries DEFAULT;

CREATE INDEX nightowl_queries_created_at_idx ON nightowl_queries (created_at);
CREATE INDEX nightowl_queries_trace_id_idx ON nightowl_queries (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_queries_group_hash_created_at_idx ON nightowl_queries (group_hash, created_at);
CREATE INDEX nightowl_queries_user_id_created_at_idx ON nightowl_queries (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_queries_execution_id_idx ON nightowl_queries (execution_id);

CREATE TABLE nightowl_exceptions (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    class text,
    message text,
    code text,
    file text,
    line bigint,
    trace jsonb,
    handled boolean,
    php_version text,
    laravel_version text,
    fingerprint text NOT NULL,  -- SDK _group, else md5(class|code|file|line)
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_exceptions_pdefault PARTITION OF nightowl_exceptions DEFAULT;

CREATE INDEX nightowl_exceptions_created_at_idx ON nightowl_exceptions (created_at);
CREATE INDEX nightowl_exceptions_trace_id_idx ON nightowl_exceptions (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_exceptions_group_hash_created_at_idx ON nightowl_exceptions (group_hash, created_at);
CREATE INDEX nightowl_exceptions_user_id_created_at_idx ON nightowl_exceptions (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_exceptions_execution_id_idx ON nightowl_exceptions (execution_id);
CREATE INDEX nightowl_exceptions_fingerprint_created_at_idx ON nightowl_exceptions (fingerprint, created_at);

CREATE TABLE nightowl_commands (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    class text,
    name text,
    command text,
    exit_code bigint,
    duration bigint,
    bootstrap bigint,
    action bigint,
    terminating bigint,
    exceptions bigint NOT NULL DEFAULT 0,
    logs bigint NOT NULL DEFAULT 0,
    queries bigint NOT NULL DEFAULT 0,
    lazy_loads bigint NOT NULL DEFAULT 0,
    jobs_queued bigint NOT NULL DEFAULT 0,
    mail bigint NOT NULL DEFAULT 0,
    notifications bigint NOT NULL DEFAULT 0,
    outgoing_requests bigint NOT NULL DEFAULT 0,
    files_read bigint NOT NULL DEFAULT 0,
    files_written bigint NOT NULL DEFAULT 0,
    cache_events bigint NOT NULL DEFAULT 0,
    hydrated_models bigint NOT NULL DEFAULT 0,
    peak_memory_usage bigint NOT NULL DEFAULT 0,
    exception_preview text,
    context jsonb,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_commands_pdefault PARTITION OF nightowl_commands DEFAULT;

CREATE INDEX nightowl_commands_created_at_idx ON nightowl_commands (created_at);
CREATE INDEX nightowl_commands_trace_id_idx ON nightowl_commands (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_commands_group_hash_created_at_idx ON nightowl_commands (group_hash, created_at);
CREATE INDEX nightowl_commands_user_id_created_at_idx ON nightowl_commands (user_id, created_at) WHERE user_id IS NOT NULL;

CREATE TABLE nightowl_jobs (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    job_id text,
    attempt_id uuid,
    attempt bigint,
    job_class text,
    connection text,
    queue text,
    status text,
    duration bigint,
    exceptions bigint NOT NULL DEFAULT 0,
    logs bigint NOT NULL DEFAULT 0,
    queries bigint NOT NULL DEFAULT 0,
    lazy_loads bigint NOT NULL DEFAULT 0,
    jobs_queued bigint NOT NULL DEFAULT 0,
    mail bigint NOT NULL DEFAULT 0,
    notifications bigint NOT NULL DEFAULT 0,
    outgoing_requests bigint NOT NULL DEFAULT 0,
    files_read bigint NOT NULL DEFAULT 0,
    files_written bigint NOT NULL DEFAULT 0,
    cache_events bigint NOT NULL DEFAULT 0,
    hydrated_models bigint NOT NULL DEFAULT 0,
    peak_memory_usage bigint NOT NULL DEFAULT 0,
    exception_preview text,
    context jsonb,
    record_type text NOT NULL,  -- 'queued-job' (dispatch) or 'job-attempt' (execution)
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_jobs_pdefault PARTITION OF nightowl_jobs DEFAULT;

CREATE INDEX nightowl_jobs_created_at_idx ON nightowl_jobs (created_at);
CREATE INDEX nightowl_jobs_trace_id_idx ON nightowl_jobs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_jobs_group_hash_created_at_idx ON nightowl_jobs (group_hash, created_at);
CREATE INDEX nightowl_jobs_user_id_created_at_idx ON nightowl_jobs (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_jobs_execution_id_idx ON nightowl_jobs (execution_id);
CREATE INDEX nightowl_jobs_job_id_idx ON nightowl_jobs (job_id);

CREATE TABLE nightowl_cache_events (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    event_type text,
    key text,
    store text,
    ttl bigint,
    duration bigint,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_cache_events_pdefault PARTITION OF nightowl_cache_events DEFAULT;

CREATE INDEX nightowl_cache_events_created_at_idx ON nightowl_cache_events (created_at);
CREATE INDEX nightowl_cache_events_trace_id_idx ON nightowl_cache_events (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_cache_events_group_hash_created_at_idx ON nightowl_cache_events (group_hash, created_at);
CREATE INDEX nightowl_cache_events_user_id_created_at_idx ON nightowl_cache_events (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_cache_events_execution_id_idx ON nightowl_cache_events (execution_id);

CREATE TABLE nightowl_mail (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    mailer text,
    mailable text,
    subject text,
    recipients bigint,
    cc bigint,
    bcc bigint,
    attachments bigint,
    duration bigint,
    failed boolean,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_mail_pdefault PARTITION OF nightowl_mail DEFAULT;

CREATE INDEX nightowl_mail_created_at_idx ON nightowl_mail (created_at);
CREATE INDEX nightowl_mail_trace_id_idx ON nightowl_mail (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_mail_group_hash_created_at_idx ON nightowl_mail (group_hash, created_at);
CREATE INDEX nightowl_mail_user_id_created_at_idx ON nightowl_mail (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_mail_execution_id_idx ON nightowl_mail (execution_id);

CREATE TABLE nightowl_notifications (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    notification text,
    channel text,
    duration bigint,
    failed boolean,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_notifications_pdefault PARTITION OF nightowl_notifications DEFAULT;

CREATE INDEX nightowl_notifications_created_at_idx ON nightowl_notifications (created_at);
CREATE INDEX nightowl_notifications_trace_id_idx ON nightowl_notifications (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_notifications_group_hash_created_at_idx ON nightowl_notifications (group_hash, created_at);
CREATE INDEX nightowl_notifications_user_id_created_at_idx ON nightowl_notifications (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_notifications_execution_id_idx ON nightowl_notifications (execution_id);

CREATE TABLE nightowl_outgoing_requests (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    host text,
    method text,
    url text,
    status_code bigint,
    duration bigint,
    request_size bigint,
    response_size bigint,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_outgoing_requests_pdefault PARTITION OF nightowl_outgoing_requests DEFAULT;

CREATE INDEX nightowl_outgoing_requests_created_at_idx ON nightowl_outgoing_requests (created_at);
CREATE INDEX nightowl_outgoing_requests_trace_id_idx ON nightowl_outgoing_requests (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_outgoing_requests_group_hash_created_at_idx ON nightowl_outgoing_requests (group_hash, created_at);
CREATE INDEX nightowl_outgoing_requests_user_id_created_at_idx ON nightowl_outgoing_requests (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_outgoing_requests_execution_id_idx ON nightowl_outgoing_requests (execution_id);

CREATE TABLE nightowl_scheduled_tasks (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    command text,
    expression text,
    timezone text,
    repeat_seconds bigint,
    without_overlapping boolean,
    on_one_server boolean,
    run_in_background boolean,
    even_in_maintenance_mode boolean,
    status text,
    duration bigint,
    exceptions bigint NOT NULL DEFAULT 0,
    logs bigint NOT NULL DEFAULT 0,
    queries bigint NOT NULL DEFAULT 0,
    lazy_loads bigint NOT NULL DEFAULT 0,
    jobs_queued bigint NOT NULL DEFAULT 0,
    mail bigint NOT NULL DEFAULT 0,
    notifications bigint NOT NULL DEFAULT 0,
    outgoing_requests bigint NOT NULL DEFAULT 0,
    files_read bigint NOT NULL DEFAULT 0,
    files_written bigint NOT NULL DEFAULT 0,
    cache_events bigint NOT NULL DEFAULT 0,
    hydrated_models bigint NOT NULL DEFAULT 0,
    peak_memory_usage bigint NOT NULL DEFAULT 0,
    exception_preview text,
    context jsonb,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_scheduled_tasks_pdefault PARTITION OF nightowl_scheduled_tasks DEFAULT;

CREATE INDEX nightowl_scheduled_tasks_created_at_idx ON nightowl_scheduled_tasks (created_at);
CREATE INDEX nightowl_scheduled_tasks_trace_id_idx ON nightowl_scheduled_tasks (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_scheduled_tasks_group_hash_created_at_idx ON nightowl_scheduled_tasks (group_hash, created_at);
CREATE INDEX nightowl_scheduled_tasks_user_id_created_at_idx ON nightowl_scheduled_tasks (user_id, created_at) WHERE user_id IS NOT NULL;

CREATE TABLE nightowl_logs (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    time_guarded boolean NOT NULL DEFAULT false,
    timestamp double precision,
    v smallint,
    environment text NOT NULL,
    server text,
    deploy text,
    trace_id uuid,
    group_hash text,
    user_id text,
    execution_source text,
    execution_id uuid,
    execution_stage text,
    execution_preview text,
    level text,
    message text,
    context jsonb,
    extra jsonb,
    extra_fields jsonb,  -- record keys no column takes; NULL when none
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE nightowl_logs_pdefault PARTITION OF nightowl_logs DEFAULT;

CREATE INDEX nightowl_logs_created_at_idx ON nightowl_logs (created_at);
CREATE INDEX nightowl_logs_trace_id_idx ON nightowl_logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX nightowl_logs_user_id_created_at_idx ON nightowl_logs (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX nightowl_logs_execution_id_idx ON nightowl_logs (execution_id);
CREATE INDEX nightowl_logs_level_idx ON nightowl_logs (level);

-- Issues: one row per (fingerprint, type, environment).
CREATE TABLE nightowl_issues (
    id bigserial PRIMARY KEY,
    type text NOT NULL DEFAULT 'exception',  -- 'exception' | 'performance'
    subtype text,
    status text NOT NULL DEFAULT 'open',     -- 'open' | 'resolved' | 'ignored'
    priority text,
    exception_class text,
    exception_message text,
    group_hash text NOT NULL,                -- the exception fingerprint
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    occurrences_count bigint NOT NULL DEFAULT 0,
    users_count bigint NOT NULL DEFAULT 0,   -- exact: rows in nightowl_issue_users
    threshold_ms integer,
    triggered_duration_ms integer,
    assigned_to text,
    description text,
    deploy text,
    environment text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (group_hash, type, environment)
);
CREATE INDEX nightowl_issues_environment_status_type_idx
    ON nightowl_issues (environment, status, type, assigned_to);
CREATE INDEX nightowl_issues_last_seen_at_idx ON nightowl_issues (last_seen_at);

-- Distinct users per issue, counted exactly: the drain inserts with
-- ON CONFLICT DO NOTHING and adds the rows actually inserted to users_count.
CREATE TABLE nightowl_issue_users (
    issue_id bigint NOT NULL REFERENCES nightowl_issues (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    PRIMARY KEY (issue_id, user_id)
);

-- Users: an identity upsert from `user` records (email = the SDK's username).
CREATE TABLE nightowl_users (
    user_id text PRIMARY KEY,
    name text,
    email text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    environment text
);

-- Exactly-once ledger: one row per committed batch, written in the batch's
-- own transaction (docs/design.rst "Delivery: exactly once").
CREATE TABLE nightowl_ingest_ledger (
    buffer_id uuid NOT NULL,
    first_id bigint NOT NULL,
    last_id bigint NOT NULL,
    ids bigint[] NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (buffer_id, first_id)
);
CREATE INDEX nightowl_ingest_ledger_buffer_id_last_id_idx ON nightowl_ingest_ledger (buffer_id, last_id);
CREATE INDEX nightowl_ingest_ledger_committed_at_idx ON nightowl_ingest_ledger (committed_at);
