/**
 * The data cache key templates see: the Drone build metadata, shaped as the
 * Go plugin's `metadata.Metadata` struct (reference A§3.2), so `.Repo.Name`,
 * `.Build.Number` or `.Commit.Author.Email` render as they did there.
 *
 * One deliberate fix: `.Commit.Ref` comes from `DRONE_COMMIT_REF` (default
 * `refs/heads/master`), as the Go plugin's documentation promised; the Go
 * plugin filled it with the commit SHA.
 *
 * @module
 */
import type { Settings } from "../settings.ts";
import { GoStruct } from "./template.ts";

/** A Go int field: settings hold numbers, templates print Go ints. */
function int(n: number): bigint {
  return BigInt(Math.trunc(n));
}

/**
 * Builds the template data from the settings: `Repo`, `Build` and `Commit`
 * (with `Commit.Author`), field names and types as in the Go plugin.
 *
 * @example
 * ```ts
 * const data = templateData(settings);
 * await parseTemplate("{{ .Repo.Name }}-{{ .Build.Number }}").execute(data); // "app-42"
 * ```
 */
export function templateData(settings: Settings): GoStruct {
  const s = settings;
  return new GoStruct("metadata.Metadata", {
    Repo: new GoStruct("metadata.Repo", {
      Avatar: s.repoAvatar,
      Branch: s.repoBranch,
      Link: s.repoLink,
      Name: s.repoName,
      Namespace: s.repoNamespace,
      Owner: s.repoOwner,
      Private: s.repoPrivate,
      Trusted: s.repoTrusted,
    }),
    Build: new GoStruct("metadata.Build", {
      Created: int(s.buildCreated),
      Deploy: s.buildDeploy,
      Event: s.buildEvent,
      Finished: int(s.buildFinished),
      Link: s.buildLink,
      Number: int(s.buildNumber),
      Started: int(s.buildStarted),
      Status: s.buildStatus,
    }),
    Commit: new GoStruct("metadata.Commit", {
      Author: new GoStruct("metadata.Author", {
        Avatar: s.commitAuthorAvatar,
        Email: s.commitAuthorEmail,
        Name: s.commitAuthorName,
      }),
      Branch: s.commitBranch,
      Link: s.commitLink,
      Message: s.commitMessage,
      Ref: s.commitRef,
      Remote: s.remoteUrl,
      Sha: s.commitSha,
    }),
  });
}
