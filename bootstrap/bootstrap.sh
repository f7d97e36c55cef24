#!/usr/bin/env bash
# Prepare one environment's Google Cloud project for Tasklane, driven from GitHub Actions. One project,
# one state bucket and two identities per environment, so nothing done for dev can reach prod:
#   - the project itself, when BILLING_ACCOUNT is set (created and linked to that billing account),
#   - the APIs Pulumi and Workload Identity Federation need,
#   - a GCS bucket for this environment's Pulumi state (versioned, uniform access, never public),
#   - a Workload Identity pool and GitHub provider that accept tokens from this repository only, and
#     from the STACK environment only on refs/heads/main,
#   - tasklane-previewer: read-only (previewer-roles.txt) plus reading the state; impersonable only by jobs
#     in the GitHub environment STACK-preview (pull-request previews and the drift check),
#   - tasklane-deployer: deployer-roles.txt, with IAM admin limited to granting grantable-roles.txt;
#     impersonable only by jobs in the GitHub environment STACK running on refs/heads/main.
# No JSON keys anywhere. Rerunning it keeps what exists and creates what is missing.
# Usage: bootstrap/bootstrap.sh PROJECT_ID STACK GITHUB_REPOSITORY [STATE_BUCKET]
#   e.g. bootstrap/bootstrap.sh my-tasklane-prod prod my-org/tasklane   (bucket: my-tasklane-prod-pulumi-state)
# Set BOOTSTRAP_DRY_RUN=1 to print the gcloud commands instead of running them (then nothing exists yet).
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
project=$1 stack=$2 repository=$3 bucket=${4:-$1-pulumi-state}
if [[ ! $project =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]]; then
  echo "bootstrap: '$project' is not a Google Cloud project ID" >&2; exit 2
fi
if [[ ! $stack =~ ^[a-z][a-z0-9-]*$ ]]; then
  echo "bootstrap: '$stack' is not a stack name (lowercase letters, digits, hyphens)" >&2; exit 2
fi
if [[ ! $repository =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
  echo "bootstrap: '$repository' is not a GitHub repository (owner/name)" >&2; exit 2
fi
if [[ ! $bucket =~ ^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$ ]]; then
  echo "bootstrap: '$bucket' is not a Cloud Storage bucket name" >&2; exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
region=${REGION:-us-central1}
pool=github
provider=github
deployer=tasklane-deployer
previewer=tasklane-previewer
deployer_email="$deployer@$project.iam.gserviceaccount.com"
previewer_email="$previewer@$project.iam.gserviceaccount.com"
dry_run=${BOOTSTRAP_DRY_RUN:-0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {
  if [[ $dry_run == 1 ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

# Whether a resource already exists: its describe command succeeds. In a dry run nothing does.
exists() {
  [[ $dry_run != 1 ]] && "$@" >/dev/null 2>&1
}

roles_in() {
  grep -v -e '^#' -e '^[[:space:]]*$' "$here/$1"
}

# A new service account is eventually consistent: binding roles to it before it is visible fails.
wait_until_visible() {
  local email=$1 tries=0
  [[ $dry_run == 1 ]] && { echo "# wait until $email is visible"; return; }
  until gcloud iam service-accounts describe "$email" --project "$project" >/dev/null 2>&1; do
    if (( ++tries > 30 )); then
      echo "bootstrap: $email is still not visible after 60 s; rerun this script to continue" >&2; exit 1
    fi
    sleep 2
  done
}

if [[ -n ${BILLING_ACCOUNT:-} ]]; then
  if ! exists gcloud projects describe "$project"; then
    run gcloud projects create "$project" --name "Tasklane $stack"
  fi
  run gcloud billing projects link "$project" --billing-account "$BILLING_ACCOUNT"
fi

# Enabling an enabled API is a no-op.
run gcloud services enable --project "$project" \
  iam.googleapis.com iamcredentials.googleapis.com sts.googleapis.com \
  cloudresourcemanager.googleapis.com serviceusage.googleapis.com storage.googleapis.com

if ! exists gcloud storage buckets describe "gs://$bucket"; then
  run gcloud storage buckets create "gs://$bucket" --project "$project" --location "$region" \
    --uniform-bucket-level-access --public-access-prevention
fi
run gcloud storage buckets update "gs://$bucket" --versioning

if ! exists gcloud iam workload-identity-pools describe "$pool" --project "$project" --location global; then
  run gcloud iam workload-identity-pools create "$pool" --project "$project" --location global \
    --display-name "GitHub Actions"
fi
# Tokens from other repositories are refused outright; a token naming this stack's deploy environment is
# refused unless it comes from main, whatever workflow or branch asked for the environment. GitHub puts the
# environment at the end of `sub` in both its subject formats (repo:OWNER/REPO:… and, for repositories
# created after July 2026, repo:OWNER@ID/REPO@ID:…), so `attribute.stage` reads it from there.
condition="assertion.repository == '$repository' && (!assertion.sub.endsWith(':environment:$stack') || assertion.ref == 'refs/heads/main')"
stage="assertion.sub.endsWith(':environment:$stack') ? 'deploy' : (assertion.sub.endsWith(':environment:$stack-preview') ? 'preview' : 'none')"
mapping="google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.ref=assertion.ref,attribute.stage=$stage"
verb=create-oidc
if exists gcloud iam workload-identity-pools providers describe "$provider" --project "$project" \
     --location global --workload-identity-pool "$pool"; then
  verb=update-oidc  # keeps the provider's trust in step with this script
fi
run gcloud iam workload-identity-pools providers "$verb" "$provider" --project "$project" \
  --location global --workload-identity-pool "$pool" --display-name "GitHub $repository" \
  --issuer-uri "https://token.actions.githubusercontent.com" \
  --attribute-mapping "$mapping" --attribute-condition "$condition"

for account in "$previewer" "$deployer"; do
  if ! exists gcloud iam service-accounts describe "$account@$project.iam.gserviceaccount.com" --project "$project"; then
    run gcloud iam service-accounts create "$account" --project "$project" \
      --display-name "Tasklane ${account#tasklane-} ($stack)"
  fi
  wait_until_visible "$account@$project.iam.gserviceaccount.com"
done

# The previewer: what `pulumi preview --refresh` reads, and the state (a preview takes no lock and writes nothing).
while read -r role; do
  run gcloud projects add-iam-policy-binding "$project" --member "serviceAccount:$previewer_email" \
    --role "$role" --condition None --quiet
done < <(roles_in previewer-roles.txt)
run gcloud storage buckets add-iam-policy-binding "gs://$bucket" \
  --member "serviceAccount:$previewer_email" --role roles/storage.objectViewer

# The deployer: everything a deploy needs, but IAM admin only for the roles the program itself grants, so
# it cannot make itself (or anyone) Owner.
while read -r role; do
  if [[ $role == roles/resourcemanager.projectIamAdmin ]]; then
    grantable=$(roles_in grantable-roles.txt | sed "s/.*/'&'/" | paste -sd, - | sed 's/,/, /g')
    cat >"$work/grantable.yaml" <<YAML
title: tasklane-grantable-roles
description: May grant and revoke only the roles the Tasklane program grants at project level.
expression: api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([$grantable])
YAML
    [[ $dry_run == 1 ]] && sed 's/^/# grantable.yaml: /' "$work/grantable.yaml"
    run gcloud projects add-iam-policy-binding "$project" --member "serviceAccount:$deployer_email" \
      --role "$role" --condition-from-file "$work/grantable.yaml" --quiet
  else
    run gcloud projects add-iam-policy-binding "$project" --member "serviceAccount:$deployer_email" \
      --role "$role" --condition None --quiet
  fi
done < <(roles_in deployer-roles.txt)
run gcloud storage buckets add-iam-policy-binding "gs://$bucket" \
  --member "serviceAccount:$deployer_email" --role roles/storage.objectAdmin

if [[ $dry_run == 1 ]]; then
  number=PROJECT_NUMBER
else
  number=$(gcloud projects describe "$project" --format 'value(projectNumber)')
fi
pool_path="projects/$number/locations/global/workloadIdentityPools/$pool"
run gcloud iam service-accounts add-iam-policy-binding "$previewer_email" --project "$project" \
  --role roles/iam.workloadIdentityUser \
  --member "principalSet://iam.googleapis.com/$pool_path/attribute.stage/preview"
run gcloud iam service-accounts add-iam-policy-binding "$deployer_email" --project "$project" \
  --role roles/iam.workloadIdentityUser \
  --member "principalSet://iam.googleapis.com/$pool_path/attribute.stage/deploy"

reviewers=""
[[ $stack == prod* ]] && reviewers=" -F 'reviewers[][type]=User' -F 'reviewers[][id]=YOUR_GITHUB_USER_ID'"
cat <<MESSAGE

Done. Now create this environment's two GitHub environments and their variables (GitHub CLI, as a
repository admin):
  gh api -X PUT repos/$repository/environments/$stack -F 'deployment_branch_policy[protected_branches]=false' \\
    -F 'deployment_branch_policy[custom_branch_policies]=true'$reviewers
  gh api -X POST repos/$repository/environments/$stack/deployment-branch-policies -f name=main
  gh api -X PUT repos/$repository/environments/$stack-preview
  for env in $stack $stack-preview; do
    gh variable set PULUMI_BACKEND_URL --env "\$env" --body gs://$bucket
    gh variable set GCP_WIF_PROVIDER --env "\$env" --body $pool_path/providers/$provider
    gh secret set PULUMI_CONFIG_PASSPHRASE --env "\$env"   # the same passphrase in both
  done
  gh variable set GCP_SERVICE_ACCOUNT --env $stack --body $deployer_email
  gh variable set GCP_SERVICE_ACCOUNT --env $stack-preview --body $previewer_email
The '$stack' environment deploys from main only$( [[ $stack == prod* ]] && echo ", after a required reviewer approves"
). Then set the stack's placeholders (README, "Before the first deploy").
MESSAGE
