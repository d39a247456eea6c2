CREATE TYPE "public"."case_urgency" AS ENUM('low', 'medium', 'high', 'critical');--> statement-breakpoint
CREATE TABLE "case_classifications" (
	"id" serial PRIMARY KEY NOT NULL,
	"case_number" text NOT NULL,
	"category" text NOT NULL,
	"subcategory" text,
	"urgency" "case_urgency" DEFAULT 'medium' NOT NULL,
	"confidence" real,
	"classified_by" text DEFAULT 'bot' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "case_classifications_case_number_unique" UNIQUE("case_number")
);
--> statement-breakpoint
CREATE TABLE "case_classification_results" (
	"id" serial PRIMARY KEY NOT NULL,
	"case_number" text NOT NULL,
	"model" text NOT NULL,
	"raw_response" jsonb NOT NULL,
	"prompt_tokens" integer,
	"completion_tokens" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "case_classification_results_case_number_idx" ON "case_classification_results" USING btree ("case_number");