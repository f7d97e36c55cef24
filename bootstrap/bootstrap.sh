#!/usr/bin/env bash
# Prepare a Google Cloud project for one Tasklane environment, driven from GitHub Actions:
#   - the project itself, when BILLING_ACCOUNT is set (created and linked to that billing account),
#   - the APIs Pulumi and Workload Identity Federation need,
#   - (optional) a GCS bucket for Pulumi state,
#   - a Workload Identity pool and GitHub provider that trust only this repository,
#   - the deployer service account with exactly the roles in deployer-roles.txt, which the
#     repository's workflows may impersonate (no JSON keys anywhere).
# Usage: bootstrap/bootstrap.sh PROJECT_ID STACK GITHUB_REPOSITORY [STATE_BUCKET]
#   e.g. bootstrap/bootstrap.sh my-tasklane-prod prod my-org/tasklane my-tasklane-state
# Set BOOTSTRAP_DRY_RUN=1 to print the gcloud commands instead of running them.
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
project=$1 stack=$2 repository=$3 bucket=${4:-}
if [[ ! $project =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]]; then
  echo "bootstrap: '$project' is not a Google Cloud project ID" >&2; exit 2
fi
if [[ ! $stack =~ ^[a-z][a-z0-9-]*$ ]]; then
  echo "bootstrap: '$stack' is not a stack name (lowercase letters, digits, hyphens)" >&2; exit 2
fi
if [[ ! $repository =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
  echo "bootstrap: '$repository' is not a GitHub repository (owner/name)" >&2; exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
region=${REGION:-us-central1}
pool=github
provider=github
deployer=tasklane-deployer
deployer_email="$deployer@$project.iam.gserviceaccount.com"

run() {
  if [[ ${BOOTSTRAP_DRY_RUN:-0} == 1 ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

if [[ -n ${BILLING_ACCOUNT:-} ]]; then
  run gcloud projects create "$project" --name "Tasklane $stack"
  run gcloud billing projects link "$project" --billing-account "$BILLING_ACCOUNT"
fi

run gcloud services enable --project "$project" \
  iam.googleapis.com iamcredentials.googleapis.com sts.googleapis.com \
  cloudresourcemanager.googleapis.com serviceusage.googleapis.com

if [[ -n $bucket ]]; then
  run gcloud storage buckets create "gs://$bucket" --project "$project" --location "$region" \
    --uniform-bucket-level-access --public-access-prevention
  run gcloud storage buckets update "gs://$bucket" --versioning
fi

run gcloud iam workload-identity-pools create "$pool" --project "$project" --location global \
  --display-name "GitHub Actions"
run gcloud iam workload-identity-pools providers create-oidc "$provider" --project "$project" \
  --location global --workload-identity-pool "$pool" --display-name "GitHub $repository" \
  --issuer-uri "https://token.actions.githubusercontent.com" \
  --attribute-mapping "google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.ref=assertion.ref" \
  --attribute-condition "assertion.repository == '$repository'"

run gcloud iam service-accounts create "$deployer" --project "$project" \
  --display-name "Tasklane deployer ($stack)"
while read -r role; do
  [[ -z $role || $role == \#* ]] && continue
  run gcloud projects add-iam-policy-binding "$project" --member "serviceAccount:$deployer_email" \
    --role "$role" --condition None
done < "$here/deployer-roles.txt"
if [[ -n $bucket ]]; then
  run gcloud storage buckets add-iam-policy-binding "gs://$bucket" \
    --member "serviceAccount:$deployer_email" --role roles/storage.objectAdmin
fi

if [[ ${BOOTSTRAP_DRY_RUN:-0} == 1 ]]; then
  number=PROJECT_NUMBER
else
  number=$(gcloud projects describe "$project" --format 'value(projectNumber)')
fi
principal="principalSet://iam.googleapis.com/projects/$number/locations/global/workloadIdentityPools/$pool/attribute.repository/$repository"
run gcloud iam service-accounts add-iam-policy-binding "$deployer_email" --project "$project" \
  --role roles/iam.workloadIdentityUser --member "$principal"

suffix=$(echo "$stack" | tr '[:lower:]-' '[:upper:]_')
cat <<MESSAGE

Set these GitHub repository variables (Settings → Secrets and variables → Actions → Variables):
  GCP_WIF_PROVIDER_$suffix=projects/$number/locations/global/workloadIdentityPools/$pool/providers/$provider
  GCP_DEPLOYER_SA_$suffix=$deployer_email
  PULUMI_BACKEND_URL=${bucket:+gs://$bucket}   (empty for Pulumi Cloud, with the secret PULUMI_ACCESS_TOKEN)
and, for a GCS backend, the secret PULUMI_CONFIG_PASSPHRASE. Create the GitHub environment '$stack'$(
  [[ $stack == prod* ]] && echo " with required reviewers").
MESSAGE
