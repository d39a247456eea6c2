ALTER TABLE "case_classifications" ADD COLUMN "assigned_team" text;--> statement-breakpoint
ALTER TABLE "case_classifications" ADD COLUMN "reasoning" text;