/**
 * The settings table: every setting's name, flag, environment variables (in
 * priority order), type, default and help, and the parser that turns
 * arguments plus environment into a validated {@link Settings} object.
 *
 * The table keeps the Go plugin's environment variable names, priorities and
 * defaults (reference A§1.2) so a Drone/Harness step switches without
 * changes. Deliberate differences (DESIGN §2): an environment variable set to
 * the empty string counts as unset; bad bool/int/duration values are errors
 * that name the variable and the accepted values; durations also accept bare
 * seconds; flags win over environment variables.
 *
 * @module
 */

/** The value kinds a setting can hold. */
export type SettingType = "string" | "bool" | "int" | "duration" | "list" | "keys";

/** Groups, for `--help` and the README. */
export type SettingGroup =
  | "mode"
  | "cache"
  | "archive"
  | "log"
  | "metadata"
  | "filesystem"
  | "s3"
  | "gcs"
  | "azure"
  | "sftp"
  | "harness";

/** One row of the settings table. */
export interface SettingSpec {
  /** Property name in {@link Settings}. */
  readonly key: string;
  /** Long flag, without the leading `--`. */
  readonly flag: string;
  /** Other accepted flag names (the Go plugin's dotted names). */
  readonly aliases?: readonly string[];
  /** Environment variables, first set (non-empty) one wins. */
  readonly env: readonly string[];
  readonly type: SettingType;
  /** Default value (durations in milliseconds). */
  readonly default: string | number | boolean | readonly string[];
  /** Accepted values, for strings that are enumerations. */
  readonly choices?: readonly string[];
  /** Never logged, also not with `--debug`. */
  readonly secret?: boolean;
  readonly group: SettingGroup;
  readonly help: string;
}

const MIN = 60_000;

/**
 * The settings table. One place for every setting: `--help`, the README
 * table (kept in sync by a test) and the parser are all derived from it.
 */
export const SETTINGS = [
  // ── mode and cache behaviour ───────────────────────────────────────────
  {
    key: "rebuild",
    flag: "rebuild",
    env: ["PLUGIN_REBUILD"],
    type: "bool",
    default: false,
    group: "mode",
    help: "Save mode (same as the `save` subcommand).",
  },
  {
    key: "restore",
    flag: "restore",
    env: ["PLUGIN_RESTORE"],
    type: "bool",
    default: false,
    group: "mode",
    help: "Restore mode (same as the `restore` subcommand).",
  },
  {
    key: "flush",
    flag: "flush",
    env: ["PLUGIN_FLUSH"],
    type: "bool",
    default: false,
    group: "mode",
    help: "Flush mode: delete cached objects (same as the `flush` subcommand). New.",
  },
  {
    key: "mount",
    flag: "mount",
    env: ["PLUGIN_MOUNT"],
    type: "list",
    default: [],
    group: "cache",
    help:
      "Paths to cache, comma separated (`~` and `$VAR` expanded); globs (`packages/**/node_modules`) and " +
      "`!pattern` excludes allowed. Positional arguments add mounts.",
  },
  {
    key: "exclude",
    flag: "exclude",
    env: ["PLUGIN_EXCLUDE"],
    type: "list",
    default: [],
    group: "cache",
    help: "Save: glob patterns left out of every archive (like `!pattern` mounts), comma separated. New.",
  },
  {
    key: "lookupOnly",
    flag: "lookup-only",
    env: ["PLUGIN_LOOKUP_ONLY"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Restore: only check whether a cache exists (one metadata call per mount), write `cache_hit` and " +
      "`cache_key_matched` to `$DRONE_OUTPUT`, download nothing. New.",
  },
  {
    key: "cacheKey",
    flag: "cache-key",
    env: ["PLUGIN_CACHE_KEY"],
    type: "string",
    default: "",
    group: "cache",
    help: "Cache key template (Go text/template). Empty: MD5 of the branch.",
  },
  {
    key: "restoreKeys",
    flag: "restore-keys",
    env: ["PLUGIN_RESTORE_KEYS"],
    type: "keys",
    default: [],
    group: "cache",
    help: "Fallback key prefixes for restore, comma or newline separated; newest match wins. New.",
  },
  {
    key: "remoteRoot",
    flag: "remote-root",
    env: ["PLUGIN_REMOTE_ROOT"],
    type: "string",
    default: "",
    group: "cache",
    help:
      "Prefix for every object name (`<remote-root>/<key>/<mount>`). Empty by default, as the Harness plugin.",
  },
  {
    key: "localRoot",
    flag: "local-root",
    env: ["PLUGIN_LOCAL_ROOT"],
    type: "string",
    default: "",
    group: "cache",
    help: "Accepted for compatibility; has no effect (as in the Go plugin).",
  },
  {
    key: "override",
    flag: "override",
    env: ["PLUGIN_OVERRIDE"],
    type: "bool",
    default: true,
    group: "cache",
    help: "Save: overwrite existing objects. When false, mounts whose object exists are skipped.",
  },
  {
    key: "metricsFile",
    flag: "metrics-file",
    env: ["PLUGIN_CACHE_INTEL_METRICS_FILE"],
    type: "string",
    default: "",
    group: "cache",
    help: "Restore: JSON file that gets `{cache_size_bytes, dst_path}` per restored mount.",
  },
  {
    key: "exitCode",
    flag: "exit-code",
    env: ["PLUGIN_EXIT_CODE", "EXIT_CODE"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Exit 1 on cache failures and misses instead of logging `[IMPORTANT]` and exiting 0.",
  },
  {
    key: "failRestoreIfKeyNotPresent",
    flag: "fail-restore-if-key-not-present",
    env: ["PLUGIN_FAIL_RESTORE_IF_KEY_NOT_PRESENT"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Restore: a miss fails the step (exit 1).",
  },
  {
    key: "enableCacheKeySeparator",
    flag: "enable-cache-key-separator",
    env: ["PLUGIN_ENABLE_SEPARATOR"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Listing restore: list under `<key>/` instead of the bare key prefix.",
  },
  {
    key: "strictKeyMatching",
    flag: "strict-key-matching",
    env: ["PLUGIN_STRICT_KEY_MATCHING"],
    type: "bool",
    default: true,
    group: "cache",
    help: "Listing restore: only objects under exactly this key (never `<key>1/…`).",
  },
  // issue 9 (h-safety): where a listing restore may write
  {
    key: "restoreAllowedPaths",
    flag: "restore-allowed-paths",
    env: ["PLUGIN_RESTORE_ALLOWED_PATHS"],
    type: "list",
    default: [],
    group: "cache",
    help:
      "Listing restore (no mounts): extra directories objects may restore into, besides the workspace, `$HOME` and the temp dir. New.",
  },
  {
    key: "flushOlderThan",
    flag: "flush-older-than",
    env: ["PLUGIN_FLUSH_OLDER_THAN"],
    type: "duration",
    default: 0,
    group: "cache",
    help: "Flush: only delete objects last modified longer ago than this (e.g. `168h`). 0: all. New.",
  },
  {
    key: "flushPrefix",
    flag: "flush-prefix",
    env: ["PLUGIN_FLUSH_PREFIX"],
    type: "string",
    default: "",
    group: "cache",
    help: "Flush: delete under this key prefix instead of the rendered key. New.",
  },
  {
    key: "dryRun",
    flag: "dry-run",
    env: ["PLUGIN_DRY_RUN"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Flush: list what would be deleted, delete nothing. New.",
  },
  {
    key: "backend",
    flag: "backend",
    env: ["PLUGIN_BACKEND"],
    type: "string",
    default: "",
    choices: ["s3", "gcs", "azure", "filesystem", "sftp", "harness"],
    group: "cache",
    help: "Storage backend. Empty: `s3` when a bucket is set, else `filesystem`.",
  },
  {
    key: "backendOperationTimeout",
    flag: "backend-operation-timeout",
    aliases: ["backend.operation-timeout"],
    env: ["PLUGIN_BACKEND_OPERATION_TIMEOUT", "BACKEND_OPERATION_TIMEOUT"],
    type: "duration",
    default: 3 * MIN,
    group: "cache",
    help: "Per-request idle timeout (retried with backoff); never a cap on a whole transfer.",
  },
  {
    key: "partSizeMb",
    flag: "part-size-mb",
    env: ["PLUGIN_PART_SIZE_MB"],
    type: "int",
    default: 16,
    group: "cache",
    help: "Upload part/block size in MiB for object stores (grown when needed to fit the maximum size). New.",
  },
  {
    key: "transferConcurrency",
    flag: "transfer-concurrency",
    env: ["PLUGIN_TRANSFER_CONCURRENCY"],
    type: "int",
    default: 4,
    group: "cache",
    help: "Parts/blocks/ranges in flight per object transfer. New.",
  },
  {
    key: "accountId",
    flag: "account-id",
    env: ["PLUGIN_ACCOUNT_ID"],
    type: "string",
    default: "",
    group: "harness",
    help: "Harness account id (harness backend, auto-detect key prefix).",
  },
  {
    key: "autoDetect",
    flag: "auto-detect",
    env: ["PLUGIN_AUTO_CACHE"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Harness cache intelligence: detect build tools, cache their directories, key on their manifests " +
      "(docs/choosing.md).",
  },
  {
    key: "autoDetectEarlyExit",
    flag: "auto-detect-early-exit",
    env: ["PLUGIN_AUTO_CACHE_EARLY_EXIT"],
    type: "bool",
    default: false,
    group: "cache",
    help: "Auto-detect with mounts but no key: skip the cache instead of using the key `default` (the Go " +
      "plugin only logs).",
  },
  // ── archive ────────────────────────────────────────────────────────────
  {
    key: "archiveFormat",
    flag: "archive-format",
    env: ["PLUGIN_ARCHIVE_FORMAT"],
    type: "string",
    default: "tar",
    choices: ["tar", "gzip", "zstd"],
    group: "archive",
    help: "Save format. Restore detects the format from the data, whatever this says.",
  },
  {
    key: "compressionLevel",
    flag: "compression-level",
    env: ["PLUGIN_COMPRESSION_LEVEL"],
    type: "int",
    default: -1,
    group: "archive",
    help: "-1: library default; gzip 0–9, zstd 1–19.",
  },
  {
    key: "skipSymlinks",
    flag: "skip-symlinks",
    env: ["PLUGIN_SKIP_SYMLINKS", "SKIP_SYMLINKS"],
    type: "bool",
    default: false,
    group: "archive",
    help: "Leave symlinks out of archives.",
  },
  {
    key: "preserveMetadata",
    flag: "preserve-metadata",
    env: ["PLUGIN_PRESERVE_METADATA"],
    type: "bool",
    default: false,
    group: "archive",
    help: "Store and restore modification times and owners (all backends).",
  },
  // ── logging ────────────────────────────────────────────────────────────
  {
    key: "logLevel",
    flag: "log-level",
    aliases: ["log.level"],
    env: ["PLUGIN_LOG_LEVEL", "LOG_LEVEL"],
    type: "string",
    default: "info",
    choices: ["error", "warn", "info", "debug"],
    group: "log",
    help: "Log level.",
  },
  {
    key: "logFormat",
    flag: "log-format",
    aliases: ["log.format"],
    env: ["PLUGIN_LOG_FORMAT", "LOG_FORMAT"],
    type: "string",
    default: "logfmt",
    choices: ["logfmt", "json"],
    group: "log",
    help: "Log format on stderr.",
  },
  {
    key: "debug",
    flag: "debug",
    env: ["PLUGIN_DEBUG", "DEBUG"],
    type: "bool",
    default: false,
    group: "log",
    help: "Debug logging (secrets are still never printed).",
  },
  // ── build metadata (template data) ─────────────────────────────────────
  ...metadata("repoFullname", "repo.fullname", "DRONE_REPO", "", "Repository full name (unused by keys)."),
  ...metadata("repoNamespace", "repo.namespace", "DRONE_REPO_NAMESPACE", "", "`.Repo.Namespace`."),
  ...metadata("repoOwner", "repo.owner", "DRONE_REPO_OWNER", "", "`.Repo.Owner`."),
  ...metadata("repoName", "repo.name", "DRONE_REPO_NAME", "", "`.Repo.Name`."),
  ...metadata("repoLink", "repo.link", "DRONE_REPO_LINK", "", "`.Repo.Link`."),
  ...metadata("repoAvatar", "repo.avatar", "DRONE_REPO_AVATAR", "", "`.Repo.Avatar`."),
  ...metadata("repoBranch", "repo.branch", "DRONE_REPO_BRANCH", "", "`.Repo.Branch` (default branch)."),
  ...metadata("repoPrivate", "repo.private", "DRONE_REPO_PRIVATE", false, "`.Repo.Private`."),
  ...metadata("repoTrusted", "repo.trusted", "DRONE_REPO_TRUSTED", false, "`.Repo.Trusted`."),
  ...metadata("remoteUrl", "remote.url", "DRONE_REMOTE_URL", "", "`.Commit.Remote`."),
  ...metadata("commitSha", "commit.sha", "DRONE_COMMIT_SHA", "", "`.Commit.Sha`."),
  ...metadata("commitRef", "commit.ref", "DRONE_COMMIT_REF", "refs/heads/master", "`.Commit.Ref`."),
  ...metadata(
    "commitBranch",
    "commit.branch",
    "DRONE_COMMIT_BRANCH",
    "master",
    "`.Commit.Branch`; the default key is its MD5.",
  ),
  ...metadata("commitMessage", "commit.message", "DRONE_COMMIT_MESSAGE", "", "`.Commit.Message`."),
  ...metadata("commitLink", "commit.link", "DRONE_COMMIT_LINK", "", "`.Commit.Link`."),
  ...metadata("commitAuthorName", "commit.author.name", "DRONE_COMMIT_AUTHOR", "", "`.Commit.Author.Name`."),
  ...metadata(
    "commitAuthorEmail",
    "commit.author.email",
    "DRONE_COMMIT_AUTHOR_EMAIL",
    "",
    "`.Commit.Author.Email`.",
  ),
  ...metadata(
    "commitAuthorAvatar",
    "commit.author.avatar",
    "DRONE_COMMIT_AUTHOR_AVATAR",
    "",
    "`.Commit.Author.Avatar`.",
  ),
  ...metadata("buildEvent", "build.event", "DRONE_BUILD_EVENT", "push", "`.Build.Event`."),
  ...metadata("buildNumber", "build.number", "DRONE_BUILD_NUMBER", 0, "`.Build.Number`."),
  ...metadata("buildCreated", "build.created", "DRONE_BUILD_CREATED", 0, "`.Build.Created`."),
  ...metadata("buildStarted", "build.started", "DRONE_BUILD_STARTED", 0, "`.Build.Started`."),
  ...metadata("buildFinished", "build.finished", "DRONE_BUILD_FINISHED", 0, "`.Build.Finished`."),
  ...metadata("buildStatus", "build.status", "DRONE_BUILD_STATUS", "success", "`.Build.Status`."),
  ...metadata("buildLink", "build.link", "DRONE_BUILD_LINK", "", "`.Build.Link`."),
  ...metadata("buildDeploy", "build.deploy", "DRONE_DEPLOY_TO", "", "`.Build.Deploy`."),
  ...metadata("yamlVerified", "yaml.verified", "DRONE_YAML_VERIFIED", false, "Accepted; unused."),
  ...metadata("yamlSigned", "yaml.signed", "DRONE_YAML_SIGNED", false, "Accepted; unused."),
  ...metadata("prevBuildNumber", "prev.build.number", "DRONE_PREV_BUILD_NUMBER", 0, "Accepted; unused."),
  ...metadata("prevBuildStatus", "prev.build.status", "DRONE_PREV_BUILD_STATUS", "", "Accepted; unused."),
  ...metadata("prevCommitSha", "prev.commit.sha", "DRONE_PREV_COMMIT_SHA", "", "Accepted; unused."),
  // ── filesystem ─────────────────────────────────────────────────────────
  {
    key: "filesystemCacheRoot",
    flag: "filesystem-cache-root",
    aliases: ["filesystem.cache-root"],
    env: ["PLUGIN_FILESYSTEM_CACHE_ROOT", "FILESYSTEM_CACHE_ROOT"],
    type: "string",
    default: "/tmp/cache",
    group: "filesystem",
    help: "Directory the filesystem backend stores objects in (must exist: usually a mounted volume).",
  },
  // ── shared by object stores ────────────────────────────────────────────
  {
    key: "endpoint",
    flag: "endpoint",
    env: ["PLUGIN_ENDPOINT", "S3_ENDPOINT", "GCS_ENDPOINT", "AZURE_BLOB_ENDPOINT"],
    type: "string",
    default: "",
    group: "s3",
    help:
      "Custom endpoint: S3-compatible store, GCS emulator, or full Azure blob URL (Azurite, private endpoints).",
  },
  {
    key: "bucket",
    flag: "bucket",
    env: ["PLUGIN_BUCKET", "S3_BUCKET", "GCS_BUCKET"],
    type: "string",
    default: "",
    group: "s3",
    help: "S3 or GCS bucket.",
  },
  {
    key: "oidcTokenId",
    flag: "oidc-token-id",
    env: ["PLUGIN_OIDC_TOKEN_ID"],
    type: "string",
    default: "",
    secret: true,
    group: "s3",
    help: "OIDC token (the JWT value) from the CI system, for S3 web identity, GCS federation and Azure.",
  },
  {
    key: "stsEndpoint",
    flag: "sts-endpoint",
    env: ["PLUGIN_STS_ENDPOINT", "AWS_STS_ENDPOINT"],
    type: "string",
    default: "",
    group: "s3",
    help: "STS endpoint for AWS role assumption (and Google STS for GCS federation).",
  },
  // ── s3 ─────────────────────────────────────────────────────────────────
  {
    key: "accessKey",
    flag: "access-key",
    env: ["PLUGIN_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "CACHE_AWS_ACCESS_KEY_ID"],
    type: "string",
    default: "",
    group: "s3",
    help: "AWS access key id.",
  },
  {
    key: "secretKey",
    flag: "secret-key",
    env: ["PLUGIN_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "CACHE_AWS_SECRET_ACCESS_KEY"],
    type: "string",
    default: "",
    secret: true,
    group: "s3",
    help: "AWS secret access key.",
  },
  {
    key: "sessionToken",
    flag: "session-token",
    env: ["PLUGIN_SESSION_TOKEN", "AWS_SESSION_TOKEN"],
    type: "string",
    default: "",
    secret: true,
    group: "s3",
    help: "AWS session token for temporary static credentials.",
  },
  {
    key: "region",
    flag: "region",
    env: ["PLUGIN_REGION", "S3_REGION"],
    type: "string",
    default: "",
    group: "s3",
    help: "AWS region (empty: the SDK default chain decides).",
  },
  {
    key: "pathStyle",
    flag: "path-style",
    env: ["PLUGIN_PATH_STYLE", "AWS_PLUGIN_PATH_STYLE"],
    type: "bool",
    default: false,
    group: "s3",
    help: "Path-style bucket addressing (MinIO, Ceph, Swift).",
  },
  {
    key: "acl",
    flag: "acl",
    env: ["PLUGIN_ACL", "AWS_ACL"],
    type: "string",
    default: "",
    group: "s3",
    help: "S3 canned ACL for uploads (empty: none).",
  },
  {
    key: "encryption",
    flag: "encryption",
    env: ["PLUGIN_ENCRYPTION", "AWS_ENCRYPTION"],
    type: "string",
    default: "",
    choices: ["", "AES256", "aws:kms", "aws:kms:dsse"],
    group: "s3",
    help: "S3 server-side encryption: `AES256`, `aws:kms`, `aws:kms:dsse`.",
  },
  {
    key: "sseKmsKeyId",
    flag: "sse-kms-key-id",
    env: ["PLUGIN_SSE_KMS_KEY_ID", "AWS_SSE_KMS_KEY_ID"],
    type: "string",
    default: "",
    group: "s3",
    help: "KMS key id for `aws:kms`/`aws:kms:dsse` encryption. New.",
  },
  {
    key: "assumeRoleArn",
    flag: "assume-role-arn",
    env: ["PLUGIN_ASSUME_ROLE_ARN", "PLUGIN_ASSUME_ROLE", "AWS_ASSUME_ROLE_ARN"],
    type: "string",
    default: "",
    group: "s3",
    help: "Role to assume (with the OIDC token: web identity).",
  },
  {
    key: "assumeRoleSessionName",
    flag: "assume-role-session-name",
    env: ["PLUGIN_ASSUME_ROLE_SESSION_NAME", "ASSUME_ROLE_SESSION_NAME"],
    type: "string",
    default: "drone-cache",
    group: "s3",
    help: "Session name for role assumption.",
  },
  {
    key: "externalId",
    flag: "external-id",
    env: ["PLUGIN_EXTERNAL_ID"],
    type: "string",
    default: "",
    group: "s3",
    help: "External id for the assumed role.",
  },
  {
    key: "userRoleArn",
    flag: "user-role-arn",
    env: ["PLUGIN_USER_ROLE_ARN", "AWS_USER_ROLE_ARN"],
    type: "string",
    default: "",
    group: "s3",
    help: "Second role assumed with the first credentials (role chaining).",
  },
  {
    key: "userRoleExternalId",
    flag: "user-role-external-id",
    env: ["PLUGIN_USER_ROLE_EXTERNAL_ID"],
    type: "string",
    default: "",
    group: "s3",
    help: "External id for the user role.",
  },
  // ── gcs ────────────────────────────────────────────────────────────────
  {
    key: "gcsApiKey",
    flag: "gcs-api-key",
    aliases: ["gcs.api-key"],
    env: ["PLUGIN_API_KEY", "GCP_API_KEY"],
    type: "string",
    default: "",
    secret: true,
    group: "gcs",
    help: "GCS API key.",
  },
  {
    key: "gcsJsonKey",
    flag: "gcs-json-key",
    aliases: ["gcs.json-key"],
    env: ["PLUGIN_JSON_KEY", "GCS_CACHE_JSON_KEY"],
    type: "string",
    default: "",
    secret: true,
    group: "gcs",
    help: "Service account JSON key: the content, or a path to the file.",
  },
  {
    key: "gcsAcl",
    flag: "gcs-acl",
    aliases: ["gcs.acl"],
    env: ["PLUGIN_GCS_ACL", "GCS_ACL"],
    type: "string",
    default: "",
    group: "gcs",
    help: "Predefined ACL for uploads (e.g. `private`, `projectPrivate`). Empty: bucket default.",
  },
  {
    key: "gcsEncryptionKey",
    flag: "gcs-encryption-key",
    aliases: ["gcs.encryption-key"],
    env: ["PLUGIN_GCS_ENCRYPTION_KEY", "GCS_ENCRYPTION_KEY"],
    type: "string",
    default: "",
    secret: true,
    group: "gcs",
    help: "Customer-supplied AES-256 key: 32 raw bytes or base64.",
  },
  {
    key: "oidcProjectNumber",
    flag: "oidc-project-number",
    env: ["PLUGIN_PROJECT_NUMBER"],
    type: "string",
    default: "",
    group: "gcs",
    help: "Workload identity federation: project number.",
  },
  {
    key: "oidcPoolId",
    flag: "oidc-pool-id",
    env: ["PLUGIN_POOL_ID"],
    type: "string",
    default: "",
    group: "gcs",
    help: "Workload identity federation: pool id.",
  },
  {
    key: "oidcProviderId",
    flag: "oidc-provider-id",
    env: ["PLUGIN_PROVIDER_ID"],
    type: "string",
    default: "",
    group: "gcs",
    help: "Workload identity federation: provider id.",
  },
  {
    key: "oidcServiceAccountEmail",
    flag: "oidc-service-account-email",
    env: ["PLUGIN_SERVICE_ACCOUNT_EMAIL"],
    type: "string",
    default: "",
    group: "gcs",
    help: "Workload identity federation: service account to impersonate.",
  },
  {
    key: "iamEndpoint",
    flag: "iam-endpoint",
    env: ["PLUGIN_IAM_ENDPOINT"],
    type: "string",
    default: "",
    group: "gcs",
    help: "Google IAM credentials endpoint (service account impersonation). New.",
  },
  // ── azure ──────────────────────────────────────────────────────────────
  {
    key: "azureOidcToken",
    flag: "azure-oidc-token",
    env: ["PLUGIN_AZURE_OIDC_TOKEN"],
    type: "string",
    default: "",
    secret: true,
    group: "azure",
    help: "Azure federated token (wins over `oidc-token-id`). New.",
  },
  {
    key: "azureFederatedTokenFile",
    flag: "azure-federated-token-file",
    env: ["AZURE_FEDERATED_TOKEN_FILE"],
    type: "string",
    default: "",
    group: "azure",
    help: "File holding the federated token (AKS workload identity). New.",
  },
  {
    key: "azureClientId",
    flag: "azure-client-id",
    aliases: ["azure.client-id"],
    env: ["PLUGIN_AZURE_CLIENT_ID", "AZURE_CLIENT_ID", "CLIENT_ID"],
    type: "string",
    default: "",
    group: "azure",
    help: "Application (client) id for OIDC or a service principal.",
  },
  {
    key: "azureClientSecret",
    flag: "azure-client-secret",
    aliases: ["azure.client-secret"],
    env: ["PLUGIN_AZURE_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "CLIENT_SECRET"],
    type: "string",
    default: "",
    secret: true,
    group: "azure",
    help: "Service principal secret.",
  },
  {
    key: "azureTenantId",
    flag: "azure-tenant-id",
    aliases: ["azure.tenant-id"],
    env: ["PLUGIN_AZURE_TENANT_ID", "AZURE_TENANT_ID", "TENANT_ID"],
    type: "string",
    default: "",
    group: "azure",
    help: "Directory (tenant) id.",
  },
  {
    key: "azureAuthorityHost",
    flag: "azure-authority-host",
    env: ["AZURE_AUTHORITY_HOST"],
    type: "string",
    default: "",
    group: "azure",
    help: "Entra ID authority host (sovereign clouds). New.",
  },
  {
    key: "azureAccountName",
    flag: "azure-account-name",
    aliases: ["azure.account-name"],
    env: ["PLUGIN_ACCOUNT_NAME", "AZURE_ACCOUNT_NAME"],
    type: "string",
    default: "",
    group: "azure",
    help: "Storage account name.",
  },
  {
    key: "azureAccountKey",
    flag: "azure-account-key",
    aliases: ["azure.account-key"],
    env: ["PLUGIN_ACCOUNT_KEY", "AZURE_ACCOUNT_KEY"],
    type: "string",
    default: "",
    secret: true,
    group: "azure",
    help: "Storage account shared key.",
  },
  {
    key: "azureSasToken",
    flag: "azure-sas-token",
    env: ["PLUGIN_SAS_TOKEN", "AZURE_STORAGE_SAS_TOKEN"],
    type: "string",
    default: "",
    secret: true,
    group: "azure",
    help: "SAS token. New.",
  },
  {
    key: "azureConnectionString",
    flag: "azure-connection-string",
    env: ["PLUGIN_AZURE_CONNECTION_STRING", "AZURE_STORAGE_CONNECTION_STRING"],
    type: "string",
    default: "",
    secret: true,
    group: "azure",
    help: "Storage connection string. New.",
  },
  {
    key: "azureContainerName",
    flag: "azure-container-name",
    aliases: ["azure.container-name"],
    env: ["PLUGIN_CONTAINER", "AZURE_CONTAINER_NAME", "AZURE_CONTAINER"],
    type: "string",
    default: "",
    group: "azure",
    help: "Container (lower-cased). Empty: the key template's first path segment, as the Go plugin.",
  },
  {
    key: "azureBlobStorageUrl",
    flag: "azure-blob-storage-url",
    aliases: ["azure.blob-storage-url"],
    env: ["AZURE_BLOB_STORAGE_URL"],
    type: "string",
    default: "blob.core.windows.net",
    group: "azure",
    help: "Blob DNS suffix: `https://<account>.<this>`.",
  },
  {
    key: "azureBlobMaxRetryRequests",
    flag: "azure-blob-max-retry-requests",
    aliases: ["azure.blob-max-retry-requets"],
    env: ["AZURE_BLOB_MAX_RETRY_REQUESTS"],
    type: "int",
    default: 4,
    group: "azure",
    help: "Retries per request (honoured, unlike the Go plugin).",
  },
  {
    key: "azureAccessTier",
    flag: "azure-access-tier",
    env: ["PLUGIN_AZURE_ACCESS_TIER"],
    type: "string",
    default: "",
    choices: ["", "Hot", "Cool", "Cold"],
    group: "azure",
    help: "Access tier for cache blobs. Empty: account default. New.",
  },
  // ── sftp ───────────────────────────────────────────────────────────────
  {
    key: "sftpCacheRoot",
    flag: "sftp-cache-root",
    aliases: ["sftp.cache-root"],
    env: ["SFTP_CACHE_ROOT"],
    type: "string",
    default: "",
    group: "sftp",
    help: "Remote directory for objects.",
  },
  {
    key: "sftpUsername",
    flag: "sftp-username",
    aliases: ["sftp.username"],
    env: ["PLUGIN_USERNAME", "SFTP_USERNAME"],
    type: "string",
    default: "",
    group: "sftp",
    help: "SFTP user.",
  },
  {
    key: "sftpPassword",
    flag: "sftp-password",
    aliases: ["sftp.password"],
    env: ["PLUGIN_PASSWORD", "SFTP_PASSWORD"],
    type: "string",
    default: "",
    secret: true,
    group: "sftp",
    help: "SFTP password.",
  },
  {
    key: "sftpPublicKeyFile",
    flag: "sftp-public-key-file",
    aliases: ["sftp.public-key-file"],
    env: ["PLUGIN_PUBLIC_KEY_FILE", "SFTP_PUBLIC_KEY_FILE"],
    type: "string",
    default: "",
    group: "sftp",
    help: "Path to the private key file (named as in the Go plugin).",
  },
  {
    key: "sftpAuthMethod",
    flag: "sftp-auth-method",
    aliases: ["sftp.auth-method"],
    env: ["SFTP_AUTH_METHOD"],
    type: "string",
    default: "",
    choices: ["", "PASSWORD", "PUBLIC_KEY_FILE"],
    group: "sftp",
    help: "`PASSWORD` or `PUBLIC_KEY_FILE`.",
  },
  {
    key: "sftpHost",
    flag: "sftp-host",
    aliases: ["sftp.host"],
    env: ["SFTP_HOST"],
    type: "string",
    default: "",
    group: "sftp",
    help: "SFTP host.",
  },
  {
    key: "sftpPort",
    flag: "sftp-port",
    aliases: ["sftp.port"],
    env: ["SFTP_PORT"],
    type: "string",
    default: "",
    group: "sftp",
    help: "SFTP port (22 when empty).",
  },
  {
    key: "sftpKeyPassphrase",
    flag: "sftp-key-passphrase",
    env: ["PLUGIN_SFTP_KEY_PASSPHRASE", "SFTP_KEY_PASSPHRASE"],
    type: "string",
    default: "",
    secret: true,
    group: "sftp",
    help: "Passphrase of an encrypted private key file. New.",
  },
  {
    key: "sftpKnownHostsFile",
    flag: "sftp-known-hosts-file",
    env: ["PLUGIN_SFTP_KNOWN_HOSTS_FILE", "SFTP_KNOWN_HOSTS_FILE"],
    type: "string",
    default: "",
    group: "sftp",
    help: "OpenSSH known_hosts file the server's host key must be in. New.",
  },
  {
    key: "sftpHostKeyFingerprint",
    flag: "sftp-host-key-fingerprint",
    env: ["PLUGIN_SFTP_HOST_KEY_FINGERPRINT", "SFTP_HOST_KEY_FINGERPRINT"],
    type: "string",
    default: "",
    group: "sftp",
    help:
      "Pinned host key fingerprint(s), `SHA256:…`, comma separated. Neither this nor a known_hosts file: " +
      "the key is not verified (as in the Go plugin) and a warning shows it. New.",
  },
  // ── harness cache service ──────────────────────────────────────────────
  {
    key: "cacheType",
    flag: "cache-type",
    env: ["PLUGIN_CACHE_TYPE"],
    type: "string",
    default: "",
    group: "harness",
    help: "Harness: non-empty selects the unified endpoints.",
  },
  {
    key: "cacheServiceToken",
    flag: "cache-service-token",
    env: ["PLUGIN_CACHE_SERVICE_BEARER_TOKEN"],
    type: "string",
    default: "",
    secret: true,
    group: "harness",
    help: "Harness cache service token.",
  },
  {
    key: "cacheServiceBaseUrl",
    flag: "cache-service-baseurl",
    env: ["PLUGIN_CACHE_SERVICE_BASE_URL"],
    type: "string",
    default: "",
    group: "harness",
    help: "Harness cache service base URL.",
  },
  {
    key: "multipartChunkSizeMb",
    flag: "multipart-chunk-size",
    aliases: ["multipart.chunk.size"],
    env: ["PLUGIN_MULTIPART_CHUNK_SIZE_MB"],
    type: "int",
    default: 512,
    group: "harness",
    help: "Harness multipart chunk size (MB).",
  },
  {
    key: "multipartMaxUploadSizeMb",
    flag: "multipart-max-size",
    aliases: ["multipart.max.size"],
    env: ["PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB"],
    type: "int",
    default: 51200,
    group: "harness",
    help: "Largest object to upload (MB); object stores size their parts to fit it.",
  },
  {
    key: "multipartThresholdSizeMb",
    flag: "multipart-threshold-size",
    aliases: ["multipart.threshold.size"],
    env: ["PLUGIN_MULTIPART_THRESHOLD_SIZE_MB"],
    type: "int",
    default: 5120,
    group: "harness",
    help: "Harness multipart threshold (MB).",
  },
  {
    key: "multipartEnabled",
    flag: "multipart-enabled",
    aliases: ["multipart.enabled"],
    env: ["PLUGIN_ENABLE_MULTIPART"],
    type: "string",
    default: "",
    group: "harness",
    help: "Harness multipart: `true` enables.",
  },
] as const satisfies readonly SettingSpec[];

/** One build-metadata row: the Go plugin's dotted flag is kept as an alias. */
function metadata<const K extends string, const D extends string | number | boolean>(
  key: K,
  goFlag: string,
  env: string,
  def: D,
  help: string,
) {
  const type = (typeof def === "boolean" ? "bool" : typeof def === "number" ? "int" : "string") as D extends
    boolean ? "bool"
    : D extends number ? "int"
    : "string";
  return [{
    key,
    flag: goFlag.replaceAll(".", "-"),
    aliases: [goFlag],
    env: [env],
    type,
    default: def,
    group: "metadata" as const,
    help,
  }] as const;
}

type ValueOf<T extends SettingType> = T extends "bool" ? boolean
  : T extends "int" | "duration" ? number
  : T extends "list" | "keys" ? string[]
  : string;

type TableSettings = { [S in (typeof SETTINGS)[number] as S["key"]]: ValueOf<S["type"]> };

/** The operation to run. */
export type Mode = "save" | "restore" | "flush";

/** Parsed, validated settings. Durations are in milliseconds. */
export type Settings = TableSettings & {
  /** The selected operation. */
  mode: Mode;
  /** The resolved backend (never empty). */
  backend: string;
  /** Where each value came from (`--flag`, `ENV_VAR` or `default`), for error messages. */
  source: Record<string, string>;
};

/** A bad setting: exit 1, the message names the setting, the value and the fix. */
export class SettingsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SettingsError";
  }
}

/**
 * No mode at all: `rebuild`, `restore` and `flush` unset and no command.
 * The Go plugin then does nothing and exits 0, so a pipeline may have such
 * a step: the CLI logs a warning and exits 0 (1 with `exit-code`), see
 * `cli.ts`. Carries the `exit-code` setting for that decision (issue 9).
 */
export class NoModeError extends SettingsError {
  readonly exitCode: boolean;
  constructor(exitCode: boolean) {
    super(
      "no mode selected, nothing to do: run `ci-cache save|restore|flush`, or set PLUGIN_REBUILD, PLUGIN_RESTORE " +
        "or PLUGIN_FLUSH to true",
    );
    this.name = "NoModeError";
    this.exitCode = exitCode;
  }
}

/** All table rows, typed loosely for generic code. */
export const SETTING_SPECS: readonly SettingSpec[] = SETTINGS;

const BOOL_TRUE = new Set(["1", "t", "T", "TRUE", "true", "True"]);
const BOOL_FALSE = new Set(["0", "f", "F", "FALSE", "false", "False"]);

/**
 * Parses a value of the given type as the Go plugin would, with clearer errors.
 *
 * @example
 * ```ts
 * parseValue(SETTING_SPECS.find((s) => s.key === "override")!, "False", "PLUGIN_OVERRIDE"); // false
 * ```
 */
export function parseValue(
  spec: SettingSpec,
  raw: string,
  from: string,
): string | number | boolean | string[] {
  switch (spec.type) {
    case "bool":
      if (BOOL_TRUE.has(raw)) return true;
      if (BOOL_FALSE.has(raw)) return false;
      throw new SettingsError(
        `${from}=${JSON.stringify(raw)} is not a boolean: use true or false (also 1/0, t/f, TRUE/FALSE)`,
      );
    case "int": {
      const n = parseGoInt(raw);
      if (n === undefined) {
        throw new SettingsError(
          `${from}=${
            JSON.stringify(raw)
          } is not an integer: use a whole number such as 4 (0x, 0o, 0b prefixes work)`,
        );
      }
      return n;
    }
    case "duration": {
      const ms = parseDuration(raw);
      if (ms === undefined) {
        throw new SettingsError(
          `${from}=${
            JSON.stringify(raw)
          } is not a duration: use a number of seconds (600) or Go units (10m, 1h30m, 90s)`,
        );
      }
      return ms;
    }
    case "list":
      return raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
    case "keys":
      // Newline separated (actions/cache style) when there is a newline, else comma separated (a Drone list).
      return (raw.includes("\n") ? raw.split("\n") : raw.split(",")).map((s) => s.trim()).filter((s) =>
        s !== ""
      );
    case "string": {
      if (!spec.choices) return raw;
      // Enumerations are case-insensitive (`--backend S3`); the canonical spelling is kept.
      const choice = spec.choices.find((c) => c.toLowerCase() === raw.toLowerCase());
      if (choice === undefined) {
        const accepted = spec.choices.filter((c) => c !== "").map(describeChoice).join(", ");
        const near = closest(raw.toLowerCase(), spec.choices.filter((c) => c !== ""));
        throw new SettingsError(
          `${from}=${JSON.stringify(raw)} is not valid: use one of ${accepted}${
            near ? ` (did you mean ${near}?)` : ""
          }`,
        );
      }
      return choice;
    }
  }
}

function parseGoInt(raw: string): number | undefined {
  const s = raw.trim().replaceAll("_", "");
  const m = /^([+-]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$/.exec(s);
  if (!m) return undefined;
  const body = m[2];
  let n: number;
  if (/^0[xXoObB]/.test(body)) n = Number(body.toLowerCase());
  else if (body.length > 1 && body.startsWith("0")) n = parseInt(body.slice(1), 8);
  else n = parseInt(body, 10);
  if (!Number.isSafeInteger(n)) return undefined;
  return m[1] === "-" ? -n : n;
}

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a Go duration (`1h30m`, `90s`, `1.5h`) or bare seconds (`600`) into milliseconds.
 *
 * @example
 * ```ts
 * parseDuration("10m"); // 600000
 * parseDuration("600"); // 600000
 * ```
 */
export function parseDuration(raw: string): number | undefined {
  const s = raw.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  if (s === "0") return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    sign = s[0] === "-" ? -1 : 1;
    pos = 1;
  }
  if (pos >= s.length) return undefined;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]];
    pos = re.lastIndex;
  }
  return sign * total;
}

/** Parsed command line: subcommand, flag values and positional mounts. */
interface ParsedArgs {
  command?: Mode | "help" | "version";
  /** Setting key → value and the flag spelling used (`--backend.operation-timeout` stays as typed). */
  flags: Map<string, { value: string; flag: string }>;
  positional: string[];
}

const COMMANDS: Record<string, ParsedArgs["command"]> = {
  save: "save",
  rebuild: "save",
  restore: "restore",
  flush: "flush",
  help: "help",
  version: "version",
};

function specByFlag(): Map<string, SettingSpec> {
  const byFlag = new Map<string, SettingSpec>();
  for (const spec of SETTING_SPECS) {
    byFlag.set(spec.flag, spec);
    for (const a of spec.aliases ?? []) byFlag.set(a, spec);
  }
  return byFlag;
}

/** Bool literals a `--bool` flag takes from the next argument (`--override false`, `--override 0`). */
const BOOL_VALUES = new Set(
  [...BOOL_TRUE, ...BOOL_FALSE].filter((w) => w !== "t" && w !== "T" && w !== "f" && w !== "F"),
);

/** Bool words that are never a mount on their own (`save node_modules false`). */
const BOOL_WORDS = new Set([...BOOL_VALUES].filter((w) => w.length > 1));

/**
 * Splits the argument list: `--flag=value`, `--flag value`, bare `--bool`,
 * `--bool true|false`, `--no-bool`, `-h`, a leading subcommand and positional
 * mounts. A bare `true`/`false` is never a mount: it is a boolean meant for
 * a flag, and an error says how to write it.
 */
function parseArgs(args: readonly string[]): ParsedArgs {
  const byFlag = specByFlag();
  const out: ParsedArgs = { flags: new Map(), positional: [] };
  let i = 0;
  if (args.length > 0 && args[0] in COMMANDS) out.command = COMMANDS[args[i++]];
  for (; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      out.positional.push(...args.slice(i + 1));
      break;
    }
    if (arg === "-h" || arg === "--help") {
      out.command = "help";
      continue;
    }
    if (arg === "-V" || arg === "--version") {
      out.command = "version";
      continue;
    }
    if (!arg.startsWith("--")) {
      if (arg.startsWith("-") && arg !== "-") {
        throw new SettingsError(`unknown option ${arg}: run ci-cache --help for the list of settings`);
      }
      if (BOOL_WORDS.has(arg)) {
        const previous = i > 0 && args[i - 1].startsWith("--") ? args[i - 1].split("=")[0] : "";
        const flag = byFlag.get(previous.slice(2))?.type === "bool" ? previous : "--<flag>";
        throw new SettingsError(
          `a bare ${JSON.stringify(arg)} is not a mount: to set a boolean, write ${flag}=${arg} ` +
            `(or ${flag} ${arg} right after the flag, or --no-${flag.slice(2)} for false)`,
        );
      }
      out.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    let name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    let value: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    let spec = byFlag.get(name);
    let negated = false;
    if (!spec && name.startsWith("no-") && value === undefined) {
      const positive = byFlag.get(name.slice(3));
      if (positive?.type === "bool") {
        spec = positive;
        value = "false";
        name = name.slice(3);
        negated = true;
      }
    }
    if (!spec) throw new SettingsError(unknownFlagMessage(name, byFlag));
    if (value === undefined) {
      if (spec.type === "bool") {
        // `--override false`: the next argument is the value when it is a boolean word.
        value = !negated && i + 1 < args.length && BOOL_VALUES.has(args[i + 1]) ? args[++i] : "true";
      } else if (i + 1 < args.length) value = args[++i];
      else throw new SettingsError(`--${name} needs a value`);
    }
    const prior = out.flags.get(spec.key);
    if (prior !== undefined && (spec.type === "list" || spec.type === "keys")) {
      value = `${prior.value}${spec.type === "keys" ? "\n" : ","}${value}`;
    }
    out.flags.set(spec.key, { value, flag: `--${name}` });
  }
  return out;
}

function unknownFlagMessage(name: string, byFlag: Map<string, SettingSpec>): string {
  const normalized = name.toLowerCase().replaceAll("_", "-");
  const near = byFlag.has(normalized) ? normalized : closest(normalized, [...byFlag.keys()]);
  return `unknown option --${name}${
    near ? `: did you mean --${near}?` : ""
  } (run ci-cache --help for every setting)`;
}

/**
 * The closest candidate to `word` (edit distance with transpositions, `_`
 * and `-` ignored), or undefined when nothing is near enough to be a typo.
 *
 * @example
 * ```ts
 * closest("archive-fromat", ["archive-format", "cache-key"]); // "archive-format"
 * ```
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const squash = (w: string) => w.toLowerCase().replace(/[-_.]/g, "");
  const target = squash(word);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(target, squash(c));
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  const allowed = Math.max(1, Math.min(3, Math.floor(target.length / 4)));
  return bestDistance <= allowed ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent transpositions. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * `PLUGIN_*` variables that are not settings of ci-cache but are set on
 * purpose by Drone, Harness or old pipeline files: accepted without a
 * warning. Every other unknown `PLUGIN_*` variable is most likely a typo.
 */
export const KNOWN_UNUSED_ENV: Readonly<Record<string, string>> = {
  PLUGIN_ARTIFACT_FILE: "set by Harness for plugin steps (artifact metadata file); not used by a cache step",
};

/** Names documented somewhere but never read (the Go plugin's stale README): the setting meant. */
const RENAMED_ENV: Readonly<Record<string, string>> = {
  PLUGIN_ROLE_ARN: "PLUGIN_ASSUME_ROLE_ARN",
};

/**
 * One warning per `PLUGIN_*` variable that is no setting (see
 * {@link KNOWN_UNUSED_ENV} for the deliberate exceptions), naming the closest
 * real setting, so `PLUGIN_CACHEKEY` does not silently save under the
 * default key.
 *
 * @example
 * ```ts
 * unknownEnvWarnings({ PLUGIN_CACHEKEY: "abc" });
 * // ["PLUGIN_CACHEKEY is not a ci-cache setting and is ignored: did you mean PLUGIN_CACHE_KEY?"]
 * ```
 */
export function unknownEnvWarnings(env: Record<string, string | undefined>): string[] {
  const known = new Set(SETTING_SPECS.flatMap((s) => s.env));
  const pluginNames = [...known].filter((e) => e.startsWith("PLUGIN_"));
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith("PLUGIN_") || known.has(name) || name in KNOWN_UNUSED_ENV) continue;
    const near = RENAMED_ENV[name] ??
      closest(name.slice("PLUGIN_".length), pluginNames.map((n) => n.slice("PLUGIN_".length)))
        ?.replace(/^/, "PLUGIN_");
    out.push(
      `${name} is not a ci-cache setting and is ignored: ` +
        (near ? `did you mean ${near}?` : "run ci-cache --help for every setting"),
    );
  }
  return out;
}

/** What {@link loadSettings} returns: settings, or a request for help/version. */
export type LoadResult =
  | { kind: "run"; settings: Settings }
  | { kind: "help" }
  | { kind: "version" };

/**
 * Builds the settings from arguments and environment: flags win, then the
 * first non-empty environment variable of each setting, then the default.
 * Throws {@link SettingsError} for anything wrong.
 *
 * @example
 * ```ts
 * const r = loadSettings(["save", "node_modules"], { PLUGIN_BACKEND: "filesystem" });
 * if (r.kind === "run") console.log(r.settings.mount); // ["node_modules"]
 * ```
 */
export function loadSettings(args: readonly string[], env: Record<string, string | undefined>): LoadResult {
  const parsed = parseArgs(args);
  if (parsed.command === "help") return { kind: "help" };
  if (parsed.command === "version") return { kind: "version" };

  const values: Record<string, unknown> = {};
  const source: Record<string, string> = {};
  for (const spec of SETTING_SPECS) {
    const fromFlag = parsed.flags.get(spec.key);
    if (fromFlag !== undefined) {
      values[spec.key] = parseValue(spec, fromFlag.value, fromFlag.flag);
      source[spec.key] = fromFlag.flag;
      continue;
    }
    const name = spec.env.find((e) => env[e] !== undefined && env[e] !== "");
    if (name !== undefined) {
      values[spec.key] = parseValue(spec, env[name]!, name);
      source[spec.key] = name;
      continue;
    }
    values[spec.key] = Array.isArray(spec.default) ? [...spec.default] : spec.default;
    source[spec.key] = "default";
  }
  if (parsed.positional.length > 0) {
    // Positional mounts are flags too: they replace PLUGIN_MOUNT, and add to --mount.
    const fromFlags = source.mount.startsWith("--") ? values.mount as string[] : [];
    values.mount = [...new Set([...fromFlags, ...parsed.positional])];
    source.mount = "arguments";
  }

  const settings = values as Settings;
  settings.source = source;
  settings.mode = resolveMode(parsed.command as Mode | undefined, settings, parsed.positional);
  if (settings.backend === "") settings.backend = settings.bucket !== "" ? "s3" : "filesystem";
  validate(settings);
  return { kind: "run", settings };
}

function resolveMode(command: Mode | undefined, s: Settings, positional: readonly string[]): Mode {
  const fromEnv: Mode[] = [];
  if (s.rebuild) fromEnv.push("save");
  if (s.restore) fromEnv.push("restore");
  if (s.flush) fromEnv.push("flush");
  if (command !== undefined) {
    const other = fromEnv.filter((m) => m !== command);
    if (other.length > 0) {
      throw new SettingsError(
        `the ${command} command conflicts with ${
          other.map((m) => describeSource(s, modeKey(m))).join(" and ")
        }=true: remove one of them`,
      );
    }
    return command;
  }
  if (fromEnv.length > 1) {
    const names = fromEnv.map((m) => describeSource(s, modeKey(m)));
    const list = names.length === 2
      ? `${names[0]} and ${names[1]} are both true`
      : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are all true`;
    throw new SettingsError(`${list}, but only one mode can run: set exactly one`);
  }
  if (fromEnv.length === 0 && positional.length > 0) {
    // `ci-cache sav`: the first word was meant as a command, not a mount.
    const near = closest(positional[0], ["save", "restore", "flush", "rebuild"]);
    throw new SettingsError(
      `unknown command ${positional[0]}: use ci-cache save, restore or flush` +
        (near ? ` (did you mean ${near}?)` : "") +
        ", or set PLUGIN_REBUILD, PLUGIN_RESTORE or PLUGIN_FLUSH to true to give mounts without a command",
    );
  }
  if (fromEnv.length === 0) throw new NoModeError(s.exitCode);
  return fromEnv[0];
}

function modeKey(m: Mode): string {
  return m === "save" ? "rebuild" : m;
}

/** The setting's origin, for messages: `--flag`, `ENV_VAR`, or the flag name for defaults. */
export function describeSource(s: Settings, key: string): string {
  const from = s.source[key];
  if (from && from !== "default" && from !== "arguments") return from;
  const spec = SETTING_SPECS.find((x) => x.key === key)!;
  return `--${spec.flag} (${spec.env[0] ?? "no env var"})`;
}

function validate(s: Settings): void {
  const levelRanges: Record<string, [number, number]> = { gzip: [0, 9], zstd: [1, 19] };
  const range = levelRanges[s.archiveFormat];
  if (
    range && s.compressionLevel !== -1 && (s.compressionLevel < range[0] || s.compressionLevel > range[1])
  ) {
    throw new SettingsError(
      `${
        describeSource(s, "compressionLevel")
      }=${s.compressionLevel} is out of range for ${s.archiveFormat}: ` +
        `use -1 (default) or ${range[0]}–${range[1]}`,
    );
  }
  for (const key of ["partSizeMb", "transferConcurrency"] as const) {
    if (s[key] < 1) {
      throw new SettingsError(`${describeSource(s, key)}=${s[key]} must be at least 1`);
    }
  }
  if (s.backendOperationTimeout < 0) {
    throw new SettingsError(`${describeSource(s, "backendOperationTimeout")} must not be negative`);
  }
  if (s.flushOlderThan < 0) {
    throw new SettingsError(`${describeSource(s, "flushOlderThan")} must not be negative`);
  }
  if (!SETTINGS.find((x) => x.key === "backend")!.choices.includes(s.backend as never)) {
    throw new SettingsError(
      `${describeSource(s, "backend")}=${JSON.stringify(s.backend)} is not a backend: ` +
        `use one of ${SETTINGS.find((x) => x.key === "backend")!.choices.map(describeChoice).join(", ")}`,
    );
  }
}

/**
 * Backends that are in the settings table but not built yet: `--help` and
 * error messages mark them. The one place to flip when a backend lands.
 */
export const UNAVAILABLE_BACKENDS: readonly string[] = [];

/** An enumeration value as `--help` and errors show it (`sftp (not available yet)`). */
function describeChoice(choice: string): string {
  return UNAVAILABLE_BACKENDS.includes(choice) ? `${choice} (not available yet)` : choice;
}

/** Values of the secret settings that are set, for log redaction. */
export function secretValues(s: Settings): string[] {
  return SETTING_SPECS.filter((spec) => spec.secret)
    .map((spec) => (s as unknown as Record<string, unknown>)[spec.key])
    .filter((v): v is string => typeof v === "string" && v !== "");
}

const GROUP_TITLES: Record<SettingGroup, string> = {
  mode: "Mode",
  cache: "Cache",
  archive: "Archive",
  log: "Logging",
  metadata: "Build metadata (template data)",
  filesystem: "Filesystem backend",
  s3: "S3 backend (endpoint, bucket and OIDC token also serve GCS/Azure)",
  gcs: "GCS backend",
  azure: "Azure backend",
  sftp: "SFTP backend",
  harness: "Harness cache service",
};

/** The `--help` text, derived from the table. */
export function helpText(version: string): string {
  const lines = [
    `ci-cache ${version}: save and restore CI build caches to object storage`,
    "",
    "Usage:",
    "  ci-cache save    [flags] [mount…]   archive each mount and upload it under the key",
    "  ci-cache restore [flags] [mount…]   download and extract; no mounts: everything under the key",
    "  ci-cache flush   [flags]            delete cached objects under the key (or --flush-prefix)",
    "  ci-cache --help | --version",
    "",
    "As a Drone/Harness plugin: no arguments; settings come from PLUGIN_* variables and the mode from",
    "PLUGIN_REBUILD, PLUGIN_RESTORE or PLUGIN_FLUSH. Flags win over environment variables; an empty",
    "variable counts as unset.",
    "",
    "Boolean flags ([=true|false]): --override alone means true; --override=false, --override false,",
    "--override 0 and --no-override mean false (true/false, True/False, TRUE/FALSE, 1/0; with = also t/f).",
    "A bare true or false is never taken as a mount. Values of enumerations are case-insensitive",
    "(--backend S3).",
  ];
  for (const group of Object.keys(GROUP_TITLES) as SettingGroup[]) {
    const unavailable = UNAVAILABLE_BACKENDS.includes(group) ? " (not available yet)" : "";
    lines.push("", `${GROUP_TITLES[group]}${unavailable}:`);
    for (const spec of SETTING_SPECS.filter((x) => x.group === group)) {
      const def = formatDefault(spec);
      const value = spec.type === "bool" ? "[=true|false]" : ` <${spec.choices ? "value" : spec.type}>`;
      lines.push(`  --${spec.flag}${value}`);
      lines.push(`      ${spec.help}${def ? ` Default: ${def}.` : ""}`);
      if (spec.choices) {
        lines.push(`      accepted: ${spec.choices.filter((c) => c !== "").map(describeChoice).join(", ")}`);
      }
      if (spec.env.length > 0) lines.push(`      env: ${spec.env.join(", ")}`);
    }
  }
  return lines.join("\n");
}

/** The default as the README and `--help` show it. */
export function formatDefault(spec: SettingSpec): string {
  const d = spec.default;
  if (spec.type === "duration") return (d as number) === 0 ? "0" : `${(d as number) / 1000}s`;
  if (Array.isArray(d)) return d.length ? d.join(",") : "";
  if (d === "") return "";
  return String(d);
}
