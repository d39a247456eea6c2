ALTER TABLE "case_classification_results" ADD COLUMN "latency_ms" integer;--> statement-breakpoint
ALTER TABLE "case_classification_results" ADD COLUMN "workflow_version" text DEFAULT 'v1' NOT NULL;