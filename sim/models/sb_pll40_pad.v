// Behavioural simulation model of the iCE40 SB_PLL40_PAD (FEEDBACK_PATH "SIMPLE" only), for
// the board-top system test (yosys' cells_sim.v declares the PLL without a behaviour).
//
// It measures the reference period at PACKAGEPIN and makes PLLOUTGLOBAL / PLLOUTCORE at
//     f_out = f_ref * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)
// (iCE40 sysCLOCK PLL design guide, simple feedback), with LOCK high after LOCK_CYCLES
// reference cycles. Settings outside the datasheet's ranges (PFD 10-133 MHz, VCO 533-1066 MHz,
// output 16-275 MHz) stop the simulation: a wrong divider setting fails here, not on a board.
// Needs a simulator with timing (Verilator --timing, Icarus).
`timescale 1ns / 1ps
module SB_PLL40_PAD (
	input   PACKAGEPIN,
	output  PLLOUTCORE,
	output  PLLOUTGLOBAL,
	input   EXTFEEDBACK,
	input   [7:0] DYNAMICDELAY,
	output  LOCK,
	input   BYPASS,
	input   RESETB,
	input   LATCHINPUTVALUE,
	output  SDO,
	input   SDI,
	input   SCLK
);
	parameter FEEDBACK_PATH = "SIMPLE";
	parameter DELAY_ADJUSTMENT_MODE_FEEDBACK = "FIXED";
	parameter DELAY_ADJUSTMENT_MODE_RELATIVE = "FIXED";
	parameter SHIFTREG_DIV_MODE = 1'b0;
	parameter FDA_FEEDBACK = 4'b0000;
	parameter FDA_RELATIVE = 4'b0000;
	parameter PLLOUT_SELECT = "GENCLK";
	parameter DIVR = 4'b0000;
	parameter DIVF = 7'b0000000;
	parameter DIVQ = 3'b000;
	parameter FILTER_RANGE = 3'b000;
	parameter ENABLE_ICEGATE = 1'b0;
	parameter TEST_MODE = 1'b0;
	parameter EXTERNAL_DIVIDE_FACTOR = 1;
	parameter LOCK_CYCLES = 16;

	wire clk_out;
	initial begin
		if (FEEDBACK_PATH != "SIMPLE") begin
			$display("SB_PLL40_PAD model: FEEDBACK_PATH %s is not modelled", FEEDBACK_PATH);
			$finish;
		end
	end
	deconvsr_pll_model #(.NAME("SB_PLL40_PAD"), .REF_DIV(DIVR + 1), .VCO_MUL(DIVF + 1),
		.OUT_DIV(1 << DIVQ), .PFD_MIN(10.0), .PFD_MAX(133.0), .VCO_MIN(533.0),
		.VCO_MAX(1066.0), .OUT_MIN(16.0), .OUT_MAX(275.0), .LOCK_CYCLES(LOCK_CYCLES))
		clock (.REF(PACKAGEPIN), .RST(!RESETB), .CLK(clk_out), .LOCK(LOCK));

	assign PLLOUTGLOBAL = BYPASS ? PACKAGEPIN : clk_out;
	assign PLLOUTCORE = PLLOUTGLOBAL;
	assign SDO = 1'b0;
endmodule

// SB_PLL40_2F_PAD: the same PLL with two global outputs, A and B, each the generated clock
// ("GENCLK") or that clock halved ("GENCLK_HALF", rising with it); other selections stop the
// simulation.
module SB_PLL40_2F_PAD (
	input   PACKAGEPIN,
	output  PLLOUTCOREA,
	output  PLLOUTGLOBALA,
	output  PLLOUTCOREB,
	output  PLLOUTGLOBALB,
	input   EXTFEEDBACK,
	input   [7:0] DYNAMICDELAY,
	output  LOCK,
	input   BYPASS,
	input   RESETB,
	input   LATCHINPUTVALUE,
	output  SDO,
	input   SDI,
	input   SCLK
);
	parameter FEEDBACK_PATH = "SIMPLE";
	parameter DELAY_ADJUSTMENT_MODE_FEEDBACK = "FIXED";
	parameter DELAY_ADJUSTMENT_MODE_RELATIVE = "FIXED";
	parameter SHIFTREG_DIV_MODE = 1'b0;
	parameter FDA_FEEDBACK = 4'b0000;
	parameter FDA_RELATIVE = 4'b0000;
	parameter PLLOUT_SELECT_PORTA = "GENCLK";
	parameter PLLOUT_SELECT_PORTB = "GENCLK";
	parameter DIVR = 4'b0000;
	parameter DIVF = 7'b0000000;
	parameter DIVQ = 3'b000;
	parameter FILTER_RANGE = 3'b000;
	parameter ENABLE_ICEGATE_PORTA = 1'b0;
	parameter ENABLE_ICEGATE_PORTB = 1'b0;
	parameter TEST_MODE = 1'b0;
	parameter EXTERNAL_DIVIDE_FACTOR = 1;
	parameter LOCK_CYCLES = 16;

	wire clk_out;
	reg clk_half = 1'b0;
	initial begin
		if (FEEDBACK_PATH != "SIMPLE") begin
			$display("SB_PLL40_2F_PAD model: FEEDBACK_PATH %s is not modelled", FEEDBACK_PATH);
			$finish;
		end
		if ((PLLOUT_SELECT_PORTA != "GENCLK" && PLLOUT_SELECT_PORTA != "GENCLK_HALF") ||
		    (PLLOUT_SELECT_PORTB != "GENCLK" && PLLOUT_SELECT_PORTB != "GENCLK_HALF")) begin
			$display("SB_PLL40_2F_PAD model: PLLOUT_SELECT %s / %s is not modelled",
			         PLLOUT_SELECT_PORTA, PLLOUT_SELECT_PORTB);
			$finish;
		end
	end
	deconvsr_pll_model #(.NAME("SB_PLL40_2F_PAD"), .REF_DIV(DIVR + 1), .VCO_MUL(DIVF + 1),
		.OUT_DIV(1 << DIVQ), .PFD_MIN(10.0), .PFD_MAX(133.0), .VCO_MIN(533.0),
		.VCO_MAX(1066.0), .OUT_MIN(16.0), .OUT_MAX(275.0), .LOCK_CYCLES(LOCK_CYCLES))
		clock (.REF(PACKAGEPIN), .RST(!RESETB), .CLK(clk_out), .LOCK(LOCK));
	always @(posedge clk_out) clk_half <= ~clk_half;

	assign PLLOUTGLOBALA = BYPASS ? PACKAGEPIN :
		(PLLOUT_SELECT_PORTA == "GENCLK_HALF" ? clk_half : clk_out);
	assign PLLOUTGLOBALB = BYPASS ? PACKAGEPIN :
		(PLLOUT_SELECT_PORTB == "GENCLK_HALF" ? clk_half : clk_out);
	assign PLLOUTCOREA = PLLOUTGLOBALA;
	assign PLLOUTCOREB = PLLOUTGLOBALB;
	assign SDO = 1'b0;
endmodule
