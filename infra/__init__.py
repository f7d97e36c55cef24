"""The Pulumi program that deploys a Tasklane task pipeline on Google Cloud."""
