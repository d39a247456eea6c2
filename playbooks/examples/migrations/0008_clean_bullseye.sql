ALTER TABLE "case_threads" ADD COLUMN "escalated_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "case_threads_case_number_idx" ON "case_threads" USING btree ("case_number");