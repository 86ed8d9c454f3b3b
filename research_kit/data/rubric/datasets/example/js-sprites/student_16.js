var snail = createSprite(0, 300);
snail.setAnimation("snail");
snail.velocityX = 1;

function draw() {
  background("lightgreen");
  snail.velocityX = snail.velocityX + 0.02;
  if (snail.x > 420) {
    snail.x = -20;
    snail.velocityX = 1;
  }
  if (keyDown("up")) {
    snail.y = snail.y - 2;
  }
  drawSprites();
}
